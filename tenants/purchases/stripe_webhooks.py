"""Stripe: the tenant's webhook endpoint, receiving events (verify, store once) and draining them into
purchases and refunds through :mod:`tenants.purchases.service`.

Receiving is quick and does no purchase work: the signature is checked on the raw body with the official
``stripe`` library (300 s tolerance), only the envelope's id and type are decoded (msgspec, no StripeObject),
and the event is inserted once per event id in one statement. A stored event with ``processed_at`` NULL is
the durable queue: a drain claims a tenant's pending events in received order, 100 per transaction, one
batch of a tenant at a time, started by beat every second and by a coalesced nudge from the API (at most one
publish per tenant per ``NUDGE_MILLISECONDS``). Each batch is one transaction: its purchases, refunds and
their commissions are committed together, and the events are marked processed by one statement. An event
whose processing raises is rolled back alone (a savepoint), counted, tried again by a later drain, and after
``MAX_ATTEMPTS`` set aside with a ``failed: …`` outcome the tenant sees. The worker handles

- ``checkout.session.completed`` / ``checkout.session.async_payment_succeeded`` when ``payment_status`` is
  ``paid``: a purchase with the session id as external id, named also by its payment intent and invoice;
- ``invoice.paid``: a purchase per paid invoice (renewals carry the subscription id); the first invoice of a
  subscription is the same payment as its Checkout Session, so whichever comes second finds the first;
- ``charge.refunded``: the charge's cumulative ``amount_refunded`` becomes refunds (a redelivered or older
  event adds nothing); a refund that comes before its payment waits for it.

The buyer: ``client_reference_id`` or metadata ``trailmark_visitor`` (the visitor token the page got from
``trailmark('visitor', cb)``), else the customer's email.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import stripe
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from tenants.cache import MISSING, Missing, TTLCache
from tenants.errors import UNAVAILABLE, DomainError, Invalid, NotFound
from tenants.isolation import current_tenant_id, system_session, tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.models import PurchaseSource, StripeEvent, StripeWebhook, utcnow
from tenants.outbox import service as outbox
from tenants.partners.referrals import is_approved_partner
from tenants.purchases.service import (
    Buyer,
    Item,
    Order,
    record_cumulative_refund,
    record_purchase,
)
from tenants.redis_store import get_redis
from tenants.security.secrets import UndecryptableSecret, decrypt, encrypt
from tenants.settings import get_settings

__all__ = [
    "DRAIN_ALL_TASK",
    "DRAIN_TASK",
    "HANDLED_EVENTS",
    "MAX_ATTEMPTS",
    "PROCESS_TASK",
    "SIGNATURE_TOLERANCE_SECONDS",
    "Received",
    "RefusedDelivery",
    "drain_events",
    "pending_tenants",
    "process_event",
    "receive_event",
    "recent_events",
    "set_signing_secret",
    "webhook_config",
    "webhook_url",
]

log = logging.getLogger(__name__)

PROCESS_TASK = "trailmark.purchases.process_stripe_event"
"""The former one-event task: kept for the outbox rows that deliveries wrote before the drain existed."""
DRAIN_TASK = "trailmark.purchases.drain_stripe_events"
DRAIN_ALL_TASK = "trailmark.purchases.drain_all_stripe_events"
DRAIN_BATCH = 100
MAX_ATTEMPTS = 5
"""Failed processing attempts (each in a later drain, a second or more apart) before an event is set aside."""
NUDGE_KEY = "trailmark:stripe:nudge:{tenant_id}"
NUDGE_MILLISECONDS = 500
"""While a nudge key lives, deliveries to its tenant publish no drain: the drain running (or beat) takes them."""
SIGNATURE_TOLERANCE_SECONDS = 300
"""Stripe's own default: a signature older (or newer) than this is refused, so a captured delivery cannot be
replayed later."""
HANDLED_EVENTS = frozenset(
    {"checkout.session.completed", "checkout.session.async_payment_succeeded", "invoice.paid", "charge.refunded"}
)
VISITOR_METADATA = "trailmark_visitor"
PRODUCT_METADATA = "trailmark_product"
PROMO_METADATA = "trailmark_promo_code"
PARTNER_METADATA = "trailmark_partner"
MAX_SECRET_LENGTH = 200
ENDPOINT_CACHE_SECONDS = 30


def _secret_context(tenant_id: UUID) -> bytes:
    """Associated data of the signing secret: its ciphertext opens only as this tenant's Stripe secret."""
    return f"stripe-webhook-secret:{tenant_id}".encode()


def webhook_config(session: Session) -> StripeWebhook:
    """The tenant's webhook endpoint, made on first use: its URL exists before a secret, because Stripe shows
    the signing secret only once the endpoint (URL) is created there."""
    tenant_id = current_tenant_id(session)
    session.execute(
        text(
            """INSERT INTO stripe_webhooks (tenant_id, endpoint_token, created_at) VALUES (:t, :token, :now)
               ON CONFLICT (tenant_id) DO NOTHING"""
        ),
        {"t": tenant_id, "token": secrets.token_urlsafe(24), "now": utcnow()},
    )
    config = session.get(StripeWebhook, tenant_id)
    assert config is not None
    return config


def webhook_url(config: StripeWebhook) -> str:
    """The address to paste into Stripe's webhook endpoint form."""
    return f"{get_settings().base_url}/hooks/stripe/{config.endpoint_token}"


def set_signing_secret(session: Session, signing_secret: str) -> StripeWebhook:
    """Store the endpoint's signing secret (``whsec_…``) encrypted; it is never shown again."""
    value = signing_secret.strip()
    if not value.startswith("whsec_") or not 10 <= len(value) <= MAX_SECRET_LENGTH or not value.isascii():
        raise Invalid(
            "the signing secret is invalid",
            {"signing_secret": "must be the endpoint's signing secret from Stripe, starting with whsec_"},
        )
    config = webhook_config(session)
    _ENDPOINTS.forget(config.endpoint_token)
    config.signing_secret = encrypt(value.encode(), _secret_context(config.tenant_id))
    config.secret_set_at = utcnow()
    session.add(config)
    session.flush()
    return config


def recent_events(session: Session, limit: int = 20) -> list[StripeEvent]:
    """The last events Stripe delivered, newest first, with their outcome (None while a worker has yet to
    process one): what the tenant checks after connecting or after "Send test webhook"."""
    query = select(StripeEvent).order_by(col(StripeEvent.received_at).desc(), col(StripeEvent.id)).limit(limit)
    return list(session.exec(query))


@dataclass(frozen=True)
class Received:
    event_id: str
    stored: bool
    """False for an event already stored (Stripe redelivers) or of a type Trailmark does not handle."""
    handled: bool


_ENDPOINTS: TTLCache[str, tuple[UUID, str]] = TTLCache(ENDPOINT_CACHE_SECONDS)
"""Endpoint token → (tenant, signing secret), so a delivery is verified without reading the database: a busy
shop's webhooks cost one transaction each (the insert). A secret stored since is read again when the cached one
does not verify, so a rotation never refuses a genuine delivery."""


def _endpoint_secret(endpoint_token: str, *, fresh: bool = False) -> tuple[UUID, str, bool]:
    """The endpoint's tenant and signing secret, and whether they came from the cache."""
    cached = MISSING if fresh else _ENDPOINTS.get(endpoint_token)
    if not isinstance(cached, Missing):
        return (*cached, True)
    tenant_id = tenant_of_public_key("stripe_endpoint", endpoint_token)
    if tenant_id is None:
        raise NotFound("no Stripe webhook endpoint has this address")
    with tenant_session(tenant_id) as session:
        config = session.get(StripeWebhook, tenant_id)
        if config is None or config.signing_secret is None:
            raise _bad_request("this endpoint has no signing secret yet: store it with PUT /api/v1/integrations/stripe")
        try:
            secret = decrypt(config.signing_secret, _secret_context(tenant_id)).decode()
        except UndecryptableSecret:
            log.error("the Stripe signing secret of tenant %s does not decrypt with TRAILMARK_SECRET_KEYS", tenant_id)
            raise _bad_request("the signing secret cannot be read; store it again") from None
    _ENDPOINTS.put(endpoint_token, (tenant_id, secret))
    return tenant_id, secret, False


def _signature_problem(payload: bytes, signature: str, secret: str) -> str | None:
    """Why the signature does not verify with ``secret`` (the library's words), or None when it does."""
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8", errors="replace"), signature, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as error:
        return str(error.user_message or error)
    return None


def receive_event(endpoint_token: str, payload: bytes, signature: str | None) -> Received:
    """Verify a delivery to the endpoint of ``endpoint_token`` and store it once (one statement); a drain is
    nudged for a new event. 404 for an unknown endpoint, 400 (:class:`Invalid`) for a missing or bad
    signature or a body that is not a Stripe event."""
    tenant_id, secret, cached = _endpoint_secret(endpoint_token)
    if not signature:
        raise _bad_request("the Stripe-Signature header is missing")
    problem = _signature_problem(payload, signature, secret)
    if problem and cached:  # the tenant may have stored a new secret since
        problem = _signature_problem(payload, signature, _endpoint_secret(endpoint_token, fresh=True)[1])
    if problem:
        raise _bad_request(f"the Stripe-Signature does not verify: {problem}")
    if _signed_at(signature) > time.time() + SIGNATURE_TOLERANCE_SECONDS:
        # The library checks only the past; a delivery dated ahead could be replayed until that date.
        raise _bad_request("the Stripe-Signature timestamp is in the future; check the server's clock")
    event = _envelope_of(payload)
    if event.type not in HANDLED_EVENTS:
        return Received(event.id, stored=False, handled=False)
    with tenant_session(tenant_id) as session:
        inserted = session.execute(
            text(
                """INSERT INTO stripe_events (tenant_id, id, type, payload, received_at)
                   VALUES (:t, :id, :type, CAST(:payload AS jsonb), :now) ON CONFLICT DO NOTHING RETURNING id"""
            ),
            {"t": tenant_id, "id": event.id, "type": event.type, "payload": payload.decode(), "now": utcnow()},
        ).first()
    if inserted is not None:
        _nudge_drain(tenant_id)
    return Received(event.id, stored=inserted is not None, handled=True)


def _nudge_drain(tenant_id: UUID) -> None:
    """Start a drain of the tenant's events unless one was started in the last ``NUDGE_MILLISECONDS``. The
    event is committed already: a lost nudge (Redis down, a worker killed) only waits for beat's drain."""
    try:
        first = get_redis().set(NUDGE_KEY.format(tenant_id=tenant_id), 1, nx=True, px=NUDGE_MILLISECONDS)
    except UNAVAILABLE as error:
        log.warning("the Stripe drain nudge failed; beat drains within a second: %s", error)
        return
    if first:
        outbox.publish_now(tenant_id, DRAIN_TASK)


def pending_tenants(max_tenants: int = 1000) -> list[UUID]:
    """The tenants with events not processed yet (through the owner-run function: ids only)."""
    with system_session() as session:
        rows = session.execute(text("SELECT * FROM trailmark_stripe_pending_tenants(:n)"), {"n": max_tenants})
        return [row[0] for row in rows]


def drain_events(tenant_id: UUID) -> int:
    """Process the tenant's pending events in received order until none is left; returns how many (0 when
    another drain of the tenant holds its batch lock: that one goes on). Each batch is one transaction; a
    drain killed mid-batch commits nothing and its events are claimed again (processing them is idempotent)."""
    failed: list[str] = []  # tried once in this drain: a later drain tries them again, not this one
    processed = _drain_pending(tenant_id, failed)
    # Reopen the nudge: a delivery from now on starts a drain of its own, not only beat's. One that found the
    # key set committed its event before this, so the pass after it finds the event.
    try:
        get_redis().delete(NUDGE_KEY.format(tenant_id=tenant_id))
    except UNAVAILABLE as error:
        log.warning("the Stripe drain nudge could not be reopened; beat drains within a second: %s", error)
    return processed + _drain_pending(tenant_id, failed)


TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""Serialization failure, deadlock, lock not available: the event's fault is the moment, not the event."""


def _drain_pending(tenant_id: UUID, failed: list[str]) -> int:
    processed = 0
    while True:
        with tenant_session(tenant_id) as session:
            # One batch of a tenant at a time: every purchase of a day updates the same rollup rows, so two
            # batches of one tenant would only wait for each other (and deadlock on the locks taken before).
            # The drain holding the lock processes what is pending; one that finds it taken leaves.
            if not session.execute(
                text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": f"{tenant_id}:stripe-drain"},
            ).scalar():
                return processed
            batch = session.execute(
                text(
                    """SELECT id, type, payload, attempts FROM stripe_events
                       WHERE tenant_id = :t AND processed_at IS NULL AND id <> ALL(CAST(:failed AS text[]))
                       ORDER BY received_at, id LIMIT :n FOR UPDATE SKIP LOCKED"""
                ),
                {"t": tenant_id, "n": DRAIN_BATCH, "failed": failed},
            ).all()
            outcomes: dict[str, str] = {}
            errors: dict[str, str] = {}
            for event_id, event_type, payload, attempts in batch:
                try:
                    outcomes[event_id] = _process(session, event_id, event_type, payload)
                except Exception as error:  # one event's fault must not hold back its tenant's others
                    # Its savepoint is rolled back; the rest of the batch commits.
                    if isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
                        log.warning("Stripe event %s met %s; a later drain tries it again", event_id, error.orig)
                        failed.append(event_id)  # not counted: it is not the event's fault
                        continue
                    errors[event_id] = _error_text(error)
                    last = attempts + 1 >= MAX_ATTEMPTS
                    log.exception(
                        "Stripe event %s failed (attempt %s of %s)%s", event_id, attempts + 1, MAX_ATTEMPTS,
                        "; it is set aside" if last else "; a later drain tries it again",
                    )  # fmt: skip
            _settle(session, outcomes, errors)
        processed += len(outcomes)
        failed += errors
        if len(batch) < DRAIN_BATCH:
            return processed


def _error_text(error: Exception) -> str:
    """What the tenant reads of a failure: the database's own message rather than SQLAlchemy's, which
    repeats the statement and its parameters."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:500]


def _settle(session: Session, outcomes: dict[str, str], errors: dict[str, str]) -> None:
    """Mark a batch's events processed with their outcomes, and count the failed ones' attempts (setting aside
    those at ``MAX_ATTEMPTS``): two statements per batch, whatever its size."""
    now, tenant_id = utcnow(), current_tenant_id(session)
    if outcomes:
        session.execute(
            text(
                """UPDATE stripe_events AS e SET processed_at = :now, outcome = d.outcome
                   FROM unnest(CAST(:ids AS text[]), CAST(:outcomes AS text[])) AS d(id, outcome)
                   WHERE e.tenant_id = :t AND e.id = d.id"""
            ),
            {"now": now, "t": tenant_id, "ids": list(outcomes), "outcomes": [o[:500] for o in outcomes.values()]},
        )
    if errors:
        session.execute(
            text(
                """UPDATE stripe_events AS e SET attempts = e.attempts + 1, last_error = d.error,
                       processed_at = CASE WHEN e.attempts + 1 >= :max THEN :now END,
                       outcome = CASE WHEN e.attempts + 1 >= :max
                           THEN left('failed: ' || (e.attempts + 1) || ' attempts raised; the last: ' || d.error, 500)
                       END
                   FROM unnest(CAST(:ids AS text[]), CAST(:errors AS text[])) AS d(id, error)
                   WHERE e.tenant_id = :t AND e.id = d.id"""
            ),
            {"now": now, "t": tenant_id, "max": MAX_ATTEMPTS, "ids": list(errors), "errors": list(errors.values())},
        )


class RefusedDelivery(DomainError):
    """A delivery that is not a genuine Stripe event of this endpoint: the body or the signature is at fault."""

    status = 400


def _signed_at(signature: str) -> int:
    """The ``t=`` of a header the library has verified (so it is there and numeric)."""
    for part in signature.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            return int(value)
    return 0


def _bad_request(message: str) -> RefusedDelivery:
    return RefusedDelivery(message)


class _EventData(msgspec.Struct):
    object: msgspec.Raw
    """Left undecoded: the worker reads it from the stored payload."""


class _Envelope(msgspec.Struct):
    """What receiving needs of an event; the rest of the body is skipped, not built into objects."""

    object: str
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    type: Annotated[str, msgspec.Meta(max_length=100)]
    data: _EventData


_ENVELOPE = msgspec.json.Decoder(_Envelope)
NOT_AN_EVENT = "the body is not a Stripe event (object, id, type, data.object)"


def _envelope_of(payload: bytes) -> _Envelope:
    try:
        event = _ENVELOPE.decode(payload)
    except msgspec.ValidationError:
        raise _bad_request(NOT_AN_EVENT) from None
    except msgspec.DecodeError:
        raise _bad_request("the body is not JSON") from None
    if event.object != "event" or not bytes(event.data.object).startswith(b"{"):
        raise _bad_request(NOT_AN_EVENT)
    return event


def process_event(session: Session, event_id: str) -> str | None:
    """One stored event processed on its own (the former one-event task): its outcome, stored once (None for
    an event that is gone). Raises what its processing raised, leaving it pending."""
    row = session.execute(
        text("SELECT type, payload, processed_at, outcome FROM stripe_events WHERE id = :id FOR UPDATE"),
        {"id": event_id},
    ).first()
    if row is None:
        return None
    if row.processed_at is not None:
        return str(row.outcome)
    outcome = _process(session, event_id, row.type, row.payload)
    _settle(session, {event_id: outcome}, {})
    return outcome


def _process(session: Session, event_id: str, event_type: str, payload: dict[str, Any]) -> str:
    """Turn one stored event into a purchase or refunds and their commissions, in a savepoint of the batch's
    transaction; returns the outcome. A rule the event breaks (no buyer email, an unknown currency) is its
    outcome, not a retry: the same event would break it again. Anything else raised is rolled back and
    raised."""
    try:
        with session.begin_nested():
            return _handle(session, event_type, payload)
    except DomainError as error:
        errors = error.errors if isinstance(error, Invalid) else {}
        details = "; ".join(f"{k} {v}" for k, v in errors.items())
        outcome = f"refused: {error.message}" + (f" ({details})" if details else "")
        log.warning("Stripe event %s (%s) %s", event_id, event_type, outcome)
        return outcome


def _handle(session: Session, event_type: str, event: dict[str, Any]) -> str:
    obj: dict[str, Any] = event["data"]["object"]
    at = _time(event.get("created"))
    if event_type.startswith("checkout.session."):
        return _checkout_completed(session, obj, at)
    if event_type == "invoice.paid":
        return _invoice_paid(session, obj, at)
    if event_type == "charge.refunded":
        return _charge_refunded(session, obj, at)
    return f"ignored: {event_type} is not handled"


def _checkout_completed(session: Session, checkout: dict[str, Any], at: datetime) -> str:
    if checkout.get("payment_status") != "paid":  # an async payment method confirms later
        return f"ignored: payment_status is {checkout.get('payment_status')!r}, not 'paid'"
    metadata = _dict(checkout.get("metadata"))
    details = _dict(checkout.get("customer_details"))
    total = _int(checkout.get("amount_total"))
    product = _text(metadata.get(PRODUCT_METADATA))
    recorded = record_purchase(
        session,
        Order(
            source=PurchaseSource.STRIPE,
            external_id=_required_text(checkout.get("id"), "id"),
            amount=total,
            tax=_int(_dict(checkout.get("total_details")).get("amount_tax")),
            currency=_text(checkout.get("currency")) or "",
            buyer=Buyer(
                visitor_token=_text(checkout.get("client_reference_id")) or _text(metadata.get(VISITOR_METADATA)),
                email=_text(details.get("email")) or _text(checkout.get("customer_email")),
                first_name=_first_name(_text(details.get("name"))),
            ),
            items=_line_items(checkout)
            or ([Item(product, 1, _int(checkout.get("amount_subtotal")))] if product else []),
            subscription_id=_id(checkout.get("subscription")),
            occurred_at=at,
            references=[r for r in (_id(checkout.get("payment_intent")), _id(checkout.get("invoice"))) if r],
            promo_code=_text(metadata.get(PROMO_METADATA)),
            partner_id=_named_partner(session, metadata),
        ),
        commissions_now=True,
    )
    return f"{'recorded' if recorded.created else 'already recorded'}: purchase {recorded.purchase.id}"


def _invoice_paid(session: Session, invoice: dict[str, Any], at: datetime) -> str:
    paid = _int(invoice.get("amount_paid"))
    if paid <= 0:  # a trial's or a fully discounted invoice: nothing was bought
        return "ignored: nothing was paid"
    parent = _dict(_dict(invoice.get("parent")).get("subscription_details"))
    legacy = _dict(invoice.get("subscription_details"))
    metadata = {**_dict(legacy.get("metadata")), **_dict(parent.get("metadata")), **_dict(invoice.get("metadata"))}
    subscription = _id(invoice.get("subscription")) or _id(parent.get("subscription"))
    tax = invoice.get("tax")
    if tax is None:  # newer API versions list the taxes instead
        tax = sum(_int(t.get("amount")) for t in invoice.get("total_taxes") or [] if isinstance(t, dict))
    payments = [_dict(_dict(p).get("payment")) for p in _dict(invoice.get("payments")).get("data") or []]
    references = [_id(invoice.get("payment_intent")), _id(invoice.get("charge"))]
    references += [_id(p.get("payment_intent")) for p in payments] + [_id(p.get("charge")) for p in payments]
    recorded = record_purchase(
        session,
        Order(
            source=PurchaseSource.STRIPE,
            external_id=_required_text(invoice.get("id"), "id"),
            amount=paid,
            tax=min(_int(tax), paid),
            currency=_text(invoice.get("currency")) or "",
            buyer=Buyer(
                visitor_token=_text(metadata.get(VISITOR_METADATA)),
                email=_text(invoice.get("customer_email")),
                first_name=_first_name(_text(invoice.get("customer_name"))),
            ),
            items=_invoice_items(invoice),
            subscription_id=subscription,
            occurred_at=at,
            references=[r for r in references if r],
            promo_code=_text(metadata.get(PROMO_METADATA)),
            partner_id=_named_partner(session, metadata),
        ),
        commissions_now=True,
    )
    return f"{'recorded' if recorded.created else 'already recorded'}: purchase {recorded.purchase.id}"


def _charge_refunded(session: Session, charge: dict[str, Any], at: datetime) -> str:
    charge_id = _required_text(charge.get("id"), "id")
    refunded = record_cumulative_refund(
        session,
        source=PurchaseSource.STRIPE,
        payment_ref=charge_id,
        refunded_total=_int(charge.get("amount_refunded")),
        match_refs=[r for r in (_id(charge.get("payment_intent")), _id(charge.get("invoice"))) if r],
        occurred_at=at,
        commissions_now=True,
    )
    if refunded.purchase is None:
        return f"waiting: refund of {charge_id} kept until its purchase arrives"
    return f"{'refunded' if refunded.created else 'already refunded'}: purchase {refunded.purchase.id}"


def _line_items(checkout: dict[str, Any]) -> list[Item]:
    """Line items, when the payload carries them (Stripe includes them only when expanded)."""
    items = []
    for line in _dict(checkout.get("line_items")).get("data") or []:
        price = _dict(_dict(line).get("price"))
        product = _id(price.get("product"))
        if product:
            quantity = max(1, _int(line.get("quantity")) or 1)
            items.append(
                Item(product, quantity, _int(line.get("amount_total")) // quantity, _text(line.get("description")))
            )
    return items


def _invoice_items(invoice: dict[str, Any]) -> list[Item]:
    items = []
    for raw in _dict(invoice.get("lines")).get("data") or []:
        line = _dict(raw)
        pricing = _dict(_dict(line.get("pricing")).get("price_details"))
        product = _id(_dict(line.get("price")).get("product")) or _id(pricing.get("product"))
        if product:
            quantity = max(1, _int(line.get("quantity")) or 1)
            items.append(Item(product, quantity, _int(line.get("amount")) // quantity, _text(line.get("description"))))
    return items


def _named_partner(session: Session, metadata: dict[str, Any]) -> UUID | None:
    """The partner the shop put in the metadata, when it is an approved one (else the referrals decide: a
    payment is never refused for its metadata)."""
    try:
        partner_id = UUID(str(metadata.get(PARTNER_METADATA) or ""))
    except ValueError:
        return None
    return partner_id if is_approved_partner(session, partner_id) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _id(value: Any) -> str | None:
    """A Stripe reference, given as its id or as the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return _text(value)


def _required_text(value: Any, name: str) -> str:
    text_value = _text(value)
    if text_value is None:
        raise Invalid("the event's object is incomplete", {name: "is missing"})
    return text_value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and value > 0 else utcnow()


def _first_name(name: str | None) -> str | None:
    return name.split()[0][:200] if name else None
