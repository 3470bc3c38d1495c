"""Sending queued conversions: batched per destination, retried with backoff, each sent once.

A destination (an integration) is due when it has a full batch queued, when its oldest queued conversion has
waited ``conversions_flush_seconds``, or when a retry's time came (``due_destinations``, asked every second by
beat's flush). :func:`send_due` then works in three steps, and no transaction is open while a platform answers:

1. **claim**: up to a batch of due, unleased deliveries, taken with ``FOR UPDATE SKIP LOCKED`` and leased to this
   attempt (``attempt_id``, ``lease_expires_at`` on the rows), committed;
2. **send**: the request(s), outside any transaction;
3. **record**: each outcome stored on the rows this attempt still holds, and the lease cleared. Idempotent: run
   again, or run by a sender whose lease already ran out, it changes nothing.

A worker killed after sending and before recording leaves its rows leased: nobody takes them until the lease
expires (``conversions_lease_seconds``, well beyond a send's timeout), then the next flush sends them again
with the same event ids, which the platforms deduplicate (Meta's ``event_id``, Google's ``orderId``). A
destination whose requests fail as a whole (429, 5xx, the network) is backed off as a whole
(``integrations.backoff_until``), so the others flush and it is not asked again on every flush.

Outcomes (``tenants.conversions.platforms``): sent; retry (exponential backoff with jitter from 1 s to 10 min,
or the platform's Retry-After when longer); permanent (failed with the platform's reason); a whole batch
refused with a 4xx is split in halves until the bad event stands alone, so the others go through; an event
past the platform's window fails as a dead letter with that reason; an authentication error pauses the
integration, and its deliveries wait, queued, until the tenant reconnects.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import or_, text
from sqlmodel import Session, col, select

from tenants.conversions import consent as consents
from tenants.conversions import payloads, platforms
from tenants.conversions.integrations import CONVERSION_KINDS, get_integration, pause_integration, secrets_of
from tenants.conversions.service import event_id_of
from tenants.errors import Invalid
from tenants.isolation import current_tenant_id, system_session, tenant_session
from tenants.models import (
    Contact,
    Conversion,
    ConversionDelivery,
    ConversionKind,
    DeliveryStatus,
    Integration,
    IntegrationStatus,
    Platform,
    Site,
    new_id,
    utcnow,
)
from tenants.settings import get_settings

__all__ = [
    "EVENT_WINDOWS",
    "MAX_ATTEMPTS",
    "SendResult",
    "SentTestEvent",
    "back_off_destination",
    "backoff_seconds",
    "due_destinations",
    "lease_seconds",
    "lock_destination",
    "record_destination_failure",
    "send_due",
    "send_test_event",
    "send_with_token",
]

log = logging.getLogger("trailmark.conversions")

EVENT_WINDOWS = {
    Platform.META: timedelta(days=7),
    Platform.GOOGLE_ADS: timedelta(days=90),
    Platform.TIKTOK: timedelta(days=7),
    Platform.LINKEDIN: timedelta(days=90),
}
"""How old an event a platform still takes: Meta refuses a whole request with an event older than 7 days
(TikTok likewise); Google takes a conversion up to 90 days after its click (the click id's first-seen time),
whenever the conversion itself happened; LinkedIn one that happened in the last 90 days."""
MAX_ATTEMPTS = 20
"""About two hours of retries (1 s doubling to the 10-minute cap): then the delivery fails with the last reason."""
BACKOFF_BASE = 1.0
BACKOFF_CAP = 600.0
DESTINATION_BACKOFF_BASE = BACKOFF_BASE
"""A first back-off is short (a single 429 or 503 costs a destination, and its batch, about a second); each
failure in a row doubles it."""


@dataclass
class SendResult:
    taken: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    requests: int = 0
    paused: bool = False
    full: bool = False
    """A whole batch was taken: more may be waiting."""
    refused_request: platforms.EventOutcome | None = None
    """A request failed as a whole with a retry (429, 5xx, the network): the destination backs off."""


def backoff_seconds(attempt: int, retry_after: float | None = None, base: float = BACKOFF_BASE) -> float:
    """``base`` (1 s) doubling per attempt up to 10 min, jittered to ±50 % so failed batches do not return in
    step; the platform's Retry-After wins when it is longer."""
    delay = min(BACKOFF_CAP, base * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.5)  # noqa: S311 - jitter
    return max(delay, retry_after or 0.0)


def _note_outcome(integration: Integration, result: SendResult) -> None:
    """A request that failed as a whole backs the destination off (1 s doubling per failure in a row, to 10 min,
    jittered, at least the platform's Retry-After): beat's flush leaves it out until then. A request the
    platform answered ends the back-off."""
    refused = result.refused_request
    if refused is not None:
        record_destination_failure(integration, refused.reason or "refused", refused.retry_after)
    elif result.requests and integration.consecutive_failures:
        integration.consecutive_failures, integration.backoff_until, integration.last_failure = 0, None, None


def record_destination_failure(integration: Integration, reason: str, retry_after: float | None = None) -> None:
    """One more failed request in a row at ``integration``: it waits, as a whole, for its back-off."""
    integration.consecutive_failures += 1
    delay = backoff_seconds(integration.consecutive_failures, retry_after, base=DESTINATION_BACKOFF_BASE)
    integration.backoff_until = utcnow() + timedelta(seconds=delay)
    integration.last_failure = reason[:500]
    log.warning(
        "destination backed off",
        extra={"integration": str(integration.id), "platform": integration.platform,
               "failures": integration.consecutive_failures, "backoff_s": round(delay, 1)},
    )  # fmt: skip


def back_off_destination(tenant_id: UUID, integration_id: UUID, reason: str) -> None:
    """The sender raised for this destination (beat's flush caught it): back it off like a failed request,
    so it is not tried again on every flush while the others go on."""
    with tenant_session(tenant_id) as session:
        integration = _locked_integration(session, integration_id)
        if integration is not None:
            record_destination_failure(integration, reason)
            session.add(integration)


def _locked_integration(session: Session, integration_id: UUID) -> Integration | None:
    """The integration, its failure count locked against concurrent senders (``FOR NO KEY UPDATE``: an erase
    inserting a retraction that references it is not held up)."""
    query = select(Integration).where(Integration.id == integration_id).with_for_update(key_share=True)
    return session.exec(query).first()


def due_destinations(limit: int = 1000) -> list[tuple[UUID, UUID]]:
    """(tenant, integration) pairs with something to send now, across tenants (an owner-run function that
    returns ids only)."""
    settings = get_settings()
    with system_session() as session:
        rows = session.execute(
            text("SELECT tenant_id, integration_id FROM trailmark_due_conversion_destinations(:flush, :batch, :n)"),
            {"flush": settings.conversions_flush_seconds, "batch": min(platforms.BATCH_LIMITS.values()), "n": limit},
        ).all()
    return [(row[0], row[1]) for row in rows]


def lock_destination(session: Session, integration_id: UUID) -> bool:
    """One retraction sender per destination at a time (transaction-scoped): a second flush finds it busy and
    moves on. (Conversions need none: each batch is claimed with a lease.)"""
    return bool(
        session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"conversions:{current_tenant_id(session)}:{integration_id}"},
        ).scalar()
    )


def send_due(tenant_id: UUID, integration_id: UUID) -> SendResult:
    """Claim a batch of the destination's due deliveries, send it, record each outcome (three steps, no
    transaction open while the platform answers)."""
    result = SendResult()
    claim = _claim(tenant_id, integration_id, result)
    if claim is None:
        return result
    outcomes: dict[UUID, _Outcome] = {}
    # A token refused midway: what was answered before stays answered, the rest waits, queued.
    pause = send_with_token(
        claim.integration, lambda tokens: _send(claim.integration, tokens, claim.batch, result, outcomes)
    )
    _record(tenant_id, claim, outcomes, result, pause)
    return result


UNREADABLE_TOKEN = "its token cannot be read (TRAILMARK_SECRET_KEYS): store it again"  # noqa: S105 - a reason, not a secret


def send_with_token(integration: Integration, send: Callable[[dict[str, str]], None]) -> str | None:
    """Call ``send`` (one platform request, or several) with the integration's tokens; the reason the
    integration must pause, or None. It pauses when the ring cannot open its token (the key that sealed it is
    gone) or when the platform refuses the token (:class:`platforms.AuthError`, logged without the token)."""
    tokens = secrets_of(integration)
    if not tokens:
        return UNREADABLE_TOKEN
    try:
        send(tokens)
    except platforms.AuthError as error:
        log.warning(
            "integration paused: the platform refused its token",
            extra={"integration": str(integration.id), "platform": integration.platform},
        )
        return f"{error}: reconnect the integration"
    return None


@dataclass(frozen=True)
class _Claimed:
    """A delivery taken for one attempt: what goes into the request (plain values, no session needed)."""

    conversion_id: UUID
    event_id: str
    event_name: str
    payload: dict[str, Any]
    identifiers: dict[str, bool]


@dataclass(frozen=True)
class _Claim:
    attempt_id: UUID
    integration: Integration
    batch: list[_Claimed]


@dataclass(frozen=True)
class _Outcome:
    outcome: platforms.EventOutcome
    latency_ms: int


def lease_seconds() -> float:
    """How long a claimed batch is its sender's: past it, the sender is presumed dead and the batch is taken
    again (same event ids). Sends time out well within it (``platforms.send_timeout``)."""
    return get_settings().conversions_lease_seconds


def _claim(tenant_id: UUID, integration_id: UUID, result: SendResult) -> _Claim | None:
    """Take up to a batch of due deliveries (``FOR UPDATE SKIP LOCKED``, then a lease: attempt id and expiry on
    the rows, committed), with their payloads built; those that cannot be sent end here with their reason."""
    with tenant_session(tenant_id) as session:
        integration = session.get(Integration, (tenant_id, integration_id))
        if integration is None or integration.status != IntegrationStatus.ACTIVE:
            return None
        now = utcnow()
        if integration.backoff_until is not None and integration.backoff_until > now:
            return None
        platform = Platform(integration.platform)
        deliveries = list(
            session.exec(
                select(ConversionDelivery)
                .where(
                    ConversionDelivery.integration_id == integration_id,
                    ConversionDelivery.status == DeliveryStatus.QUEUED,
                    col(ConversionDelivery.next_attempt_at) <= now,
                    or_(
                        col(ConversionDelivery.lease_expires_at).is_(None),
                        col(ConversionDelivery.lease_expires_at) <= now,
                    ),
                )
                .order_by(col(ConversionDelivery.next_attempt_at), col(ConversionDelivery.conversion_id))
                .limit(platforms.BATCH_LIMITS[platform])
                .with_for_update(skip_locked=True)
            )
        )
        result.taken = len(deliveries)
        result.full = result.taken == platforms.BATCH_LIMITS[platform]
        if not deliveries:
            return None
        ready = _prepared(session, integration, deliveries, result)
        if not ready:
            return None
        attempt_id, expires = new_id(), now + timedelta(seconds=lease_seconds())
        # Google finds a conversion by its action too: what it is uploaded under is kept for its retraction.
        by_action: dict[str | None, list[UUID]] = {}
        for item in ready:
            by_action.setdefault(item.built.payload.get("conversionAction"), []).append(item.conversion.id)
        session.flush()  # the ones _prepared ended, first
        for action, ids in by_action.items():  # one statement per action, not a row each
            session.execute(
                _LEASE,
                {"attempt": attempt_id, "expires": expires, "action": action, "t": tenant_id, "i": integration_id,
                 "ids": ids},
            )  # fmt: skip
        batch = [_claimed(r) for r in ready]
        return _Claim(attempt_id, integration, batch)


# Joined to the ids (an index lookup each by the primary key), not ``= ANY(…)``: after a bulk insert the
# planner's stale estimate scanned all the destination's rows for each statement.
_LEASE = text(
    """UPDATE conversion_deliveries d
       SET attempt_id = :attempt, lease_expires_at = :expires, conversion_action = :action
       FROM unnest(CAST(:ids AS uuid[])) AS claimed(id)
       WHERE d.tenant_id = :t AND d.integration_id = :i AND d.conversion_id = claimed.id"""
)


def _claimed(ready: _Ready) -> _Claimed:
    conversion = ready.conversion
    return _Claimed(
        conversion.id,
        conversion.event_id,
        conversion.event_name,
        ready.built.payload,
        ready.built.identifiers,
    )


def _record(
    tenant_id: UUID,
    claim: _Claim,
    outcomes: dict[UUID, _Outcome],
    result: SendResult,
    pause: str | None,
) -> None:
    """Store what the platform answered, for the rows this attempt still holds (``attempt_id``): idempotent,
    and a sender whose lease ran out (another took the batch again) changes nothing. Rows left unanswered (the
    token was refused midway, or could not be read) go back to the queue as they were, and the integration
    pauses for ``pause``."""
    with tenant_session(tenant_id) as session:
        integration = _locked_integration(session, claim.integration.id)
        if integration is None:
            return  # deleted meanwhile: its deliveries went with it
        by_id = {c.conversion_id: c for c in claim.batch}
        recorded = _record_sent(session, integration, claim, outcomes=outcomes, by_id=by_id, result=result)
        held = list(
            session.exec(
                select(ConversionDelivery)
                .where(
                    ConversionDelivery.integration_id == integration.id,
                    ConversionDelivery.attempt_id == claim.attempt_id,
                    ConversionDelivery.status == DeliveryStatus.QUEUED,
                )
                .with_for_update()
            )
        )
        if not held and not recorded:
            return
        for delivery in held:
            delivery.attempt_id, delivery.lease_expires_at = None, None
            answered = outcomes.get(delivery.conversion_id)
            if answered is not None:
                _apply(delivery, answered.outcome, result)
                _log_outcome(integration, by_id[delivery.conversion_id], str(delivery.status), delivery.attempts,
                             answered.latency_ms)  # fmt: skip
            session.add(delivery)
        if pause is not None:
            pause_integration(session, integration, pause)
            result.paused = True
        _note_outcome(integration, result)
        session.add(integration)


_RECORD_SENT = text(
    """UPDATE conversion_deliveries d
       SET status = 'sent', reason = :reason, sent_at = :now, last_attempt_at = :now, attempts = d.attempts + 1,
           attempt_id = NULL, lease_expires_at = NULL
       FROM unnest(CAST(:ids AS uuid[])) AS sent(id)
       WHERE d.tenant_id = :t AND d.integration_id = :i AND d.conversion_id = sent.id
         AND d.attempt_id = :attempt AND d.status = 'queued'
       RETURNING d.conversion_id, d.attempts"""
)


def _record_sent(
    session: Session,
    integration: Integration,
    claim: _Claim,
    *,
    outcomes: dict[UUID, _Outcome],
    by_id: dict[UUID, _Claimed],
    result: SendResult,
) -> int:
    """The sent ones, most of a batch, in one statement per reason (a row each would double a batch's time
    in the database); only rows this attempt still holds. How many were recorded."""
    by_reason: dict[str | None, list[UUID]] = {}
    for conversion_id, answered in outcomes.items():
        if answered.outcome.status == "sent":
            by_reason.setdefault(answered.outcome.reason, []).append(conversion_id)
    recorded = 0
    for reason, ids in by_reason.items():
        rows = session.execute(
            _RECORD_SENT,
            {"reason": reason, "now": utcnow(), "t": integration.tenant_id, "i": integration.id,
             "attempt": claim.attempt_id, "ids": ids},
        ).all()  # fmt: skip
        recorded += len(rows)
        for conversion_id, attempts in rows:
            _log_outcome(integration, by_id[conversion_id], str(DeliveryStatus.SENT), attempts,
                         outcomes[conversion_id].latency_ms)  # fmt: skip
    result.sent += recorded
    return recorded


def _log_outcome(integration: Integration, claimed: _Claimed, status: str, attempt: int, latency_ms: int) -> None:
    log.info(
        "conversion %s",
        status,
        extra={
            "event_id": claimed.event_id,
            "platform": integration.platform,
            "event_name": claimed.event_name,
            "identifiers": claimed.identifiers,
            "status": status,
            "latency_ms": latency_ms,
            "attempt": attempt,
        },
    )


@dataclass
class _Ready:
    delivery: ConversionDelivery
    conversion: Conversion
    built: payloads.Built


def _past_window(integration: Integration, conversion: Conversion, now: datetime) -> str | None:
    """Why the platform would refuse the conversion as too old (the reason to dead-letter it), or None. Meta
    and TikTok count from the conversion; Google from the click (its click id's first-seen time): a click more
    than 90 days old is refused (EXPIRED_EVENT) however fresh the conversion is."""
    platform = Platform(integration.platform)
    window = EVENT_WINDOWS[platform]
    if platform == Platform.GOOGLE_ADS and (clicked := payloads.google_clicked_at(conversion)) is not None:
        if now - clicked <= window:
            return None
        return (
            f"dead letter: its click is older than google_ads's {window.days}-day window "
            f"(click id first seen {clicked.isoformat()})"
        )
    if conversion.occurred_at >= now - window:
        return None
    return f"dead letter: older than {platform}'s {window.days}-day window"


def _prepared(
    session: Session, integration: Integration, deliveries: Sequence[ConversionDelivery], result: SendResult
) -> list[_Ready]:
    """Each delivery's payload, built from what is stored now (the same every attempt); those that cannot be
    sent (nothing to match, past the window) end here with their reason."""
    ids = [d.conversion_id for d in deliveries]
    conversions = {c.id: c for c in session.exec(select(Conversion).where(col(Conversion.id).in_(ids)))}
    contact_ids = {c.contact_id for c in conversions.values() if c.contact_id}
    contacts = {c.id: c for c in session.exec(select(Contact).where(col(Contact.id).in_(contact_ids)))}
    now = utcnow()
    ready = []
    for delivery in deliveries:
        conversion = conversions[delivery.conversion_id]
        try:
            late = _past_window(integration, conversion, now)
        except (TypeError, ValueError) as error:  # a stored click time that cannot be read: this one alone
            late = f"payload cannot be built: {error}"
        if late is not None:
            _finish(delivery, DeliveryStatus.FAILED, late)
            result.failed += 1
            continue
        consent = consents.consent_for(session, conversion.visitor_id, conversion.contact_id)
        site = session.get(Site, (integration.tenant_id, conversion.site_id)) if conversion.site_id else None
        if (refusal := consents.refusal(site, consent)) is not None:  # the answer changed since it was recorded
            _finish(delivery, DeliveryStatus.SKIPPED, refusal)
            result.skipped += 1
            continue
        contact = contacts.get(conversion.contact_id) if conversion.contact_id else None
        try:
            built = payloads.build(conversion, contact, integration, consent)
        except Exception as error:  # a payload that cannot be built fails alone, not the whole batch
            _finish(delivery, DeliveryStatus.FAILED, f"payload cannot be built: {error}")
            result.failed += 1
            continue
        if isinstance(built, payloads.Unsendable):
            _finish(delivery, DeliveryStatus.SKIPPED, built.reason)
            result.skipped += 1
            continue
        ready.append(_Ready(delivery, conversion, built))
    return ready


def _finish(delivery: ConversionDelivery, status: DeliveryStatus, reason: str | None) -> None:
    delivery.status = status
    delivery.reason = reason
    if status == DeliveryStatus.SENT:
        delivery.sent_at = utcnow()


def _send(
    integration: Integration,
    tokens: dict[str, str],
    batch: list[_Claimed],
    result: SendResult,
    outcomes: dict[UUID, _Outcome],
) -> None:
    """One request for ``batch``, each event's outcome into ``outcomes``; a whole-batch refusal that one bad
    event may have caused (``splittable``) is split in halves until that event stands alone."""
    started = time.monotonic()
    answer = platforms.send(integration, tokens, [c.payload for c in batch])
    result.requests += 1
    latency_ms = round((time.monotonic() - started) * 1000)
    if answer.whole is not None and answer.whole.status == "retry" and result.refused_request is None:
        result.refused_request = answer.whole
    if answer.whole is not None and answer.splittable and len(batch) > 1:
        middle = len(batch) // 2
        _send(integration, tokens, batch[:middle], result, outcomes)
        _send(integration, tokens, batch[middle:], result, outcomes)
        return
    answered = answer.per_event or (answer.whole,) * len(batch)
    for claimed, outcome in zip(batch, answered, strict=True):
        assert outcome is not None
        outcomes[claimed.conversion_id] = _Outcome(outcome, latency_ms)


def _apply(delivery: ConversionDelivery, outcome: platforms.EventOutcome, result: SendResult) -> None:
    delivery.attempts += 1
    delivery.last_attempt_at = utcnow()
    if outcome.status == "sent":
        _finish(delivery, DeliveryStatus.SENT, outcome.reason)
        result.sent += 1
    elif outcome.status == "retry" and delivery.attempts < MAX_ATTEMPTS:
        delivery.reason = outcome.reason
        delivery.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(delivery.attempts, outcome.retry_after))
        result.retrying += 1
    else:
        reason = outcome.reason or "refused"
        if outcome.status == "retry":
            reason = f"gave up after {delivery.attempts} attempts: {reason}"
        _finish(delivery, DeliveryStatus.FAILED, reason)
        result.failed += 1


@dataclass(frozen=True)
class SentTestEvent:
    delivered: bool
    detail: str
    """What the platform answered, for the tenant."""


def send_test_event(session: Session, integration_id: UUID) -> SentTestEvent:
    """A test conversion (the first kind the integration takes) through the same payload and sender as real
    conversions, marked so the platform keeps it out of reports: Meta's and TikTok's ``test_event_code``
    (required: without one it would count), Google's ``validateOnly``. An authentication error pauses the
    integration, as it does for real conversions."""
    integration = get_integration(session, integration_id)
    platform = Platform(integration.platform)
    if platform == Platform.LINKEDIN:
        raise Invalid(
            "LinkedIn has no test events",
            {"platform": "LinkedIn's Conversions API has no test mode: every event it receives counts"},
        )
    if platform != Platform.GOOGLE_ADS and not integration.settings.get("test_event_code"):
        raise Invalid(
            "a test event needs the test event code",
            {"test_event_code": "copy it from the platform's events manager (Test events) into the integration"},
        )
    if not integration.secret:
        raise Invalid("the integration is not connected", {"access_token": "store the platform's token first"})
    now = utcnow()
    key = f"test:{new_id()}"
    touches = {
        Platform.META.value: {"source": "converting_visit", "click_ids": {}, "ad_cookies": {}, "clicked_at": {}},
        Platform.GOOGLE_ADS.value: {
            "source": "converting_visit",
            "click_ids": {"gclid": "TeSt-gclid-from-trailmark"},
            "ad_cookies": {},
            "clicked_at": {"gclid": (now - timedelta(minutes=5)).isoformat()},
        },
    }
    # A conversion the integration takes (and, for Google, has a conversion action for).
    kinds = [ConversionKind(k) for k in CONVERSION_KINDS if integration.events.get(k)]
    custom = list(integration.events.get("custom") or [])
    kind = kinds[0] if kinds else ConversionKind.CUSTOM
    conversion = Conversion(
        tenant_id=integration.tenant_id,
        kind=kind,
        event_name=kind.value if kinds or not custom else custom[0],
        value=100 if kind == ConversionKind.PURCHASE else None,
        currency="USD" if kind == ConversionKind.PURCHASE else None,
        source_key=key,
        event_id=event_id_of(integration.tenant_id, key),
        occurred_at=now,
        page_url=f"{get_settings().base_url}/trailmark-test-event",
        user_agent="Trailmark test event",
        touches=touches,
    )
    contact = Contact(tenant_id=integration.tenant_id, email="test-event@trailmark.invalid", first_name="Test")
    built = payloads.build(conversion, contact, integration, None)
    if isinstance(built, payloads.Unsendable):
        return SentTestEvent(False, built.reason)
    try:
        answer = platforms.send(integration, secrets_of(integration), [built.payload], test=True)
    except platforms.AuthError as error:
        pause_integration(session, integration, f"{error}: reconnect the integration")
        return SentTestEvent(False, str(error))
    outcome = answer.whole or (answer.per_event[0] if answer.per_event else None)
    if outcome is None or outcome.status == "sent":
        return SentTestEvent(True, f"{platform.value} accepted the test event {conversion.event_id}")
    return SentTestEvent(False, outcome.reason or "refused")
