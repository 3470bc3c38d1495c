"""Purchases: the one implementation of recording a sale and applying a refund, used by the REST API and the
Stripe worker alike.

- A purchase is stored once per ``(source, external_id)`` and once per payment: every purchase names its
  payment references (its external id, a Stripe payment intent, invoice …), and an order that names a
  reference of a stored purchase *is* that purchase. So the same Checkout Session by webhook and by REST
  (``source='stripe'``, ``external_id`` = the session id) is one purchase, and so is a subscription's first
  invoice and the Checkout Session that created it.
- A refund is stored once per ``(source, payment_ref, external_id)``. One that arrives before its purchase
  waits (``purchase_id`` NULL) and is applied when a purchase with one of its ``match_refs`` lands; the
  refunded amount is always ``least(amount, sum of its refunds)``, so any order of arrival ends the same.
- Concurrent deliveries of one order, or of a refund and its payment, are serialised by transaction-level
  advisory locks on the external id and the payment references (taken in sorted order: no deadlock).
- Every recorded purchase and every change of a refunded amount enqueues an outbox event in the same
  transaction (:data:`RECORDED_TASK`, :data:`REFUNDED_TASK`): the hooks commissions hang on; conversions get
  their own. The Stripe drain passes ``commissions_now``: it credits the purchase and applies refunds to its
  commissions in the same transaction instead (no task hop per purchase: the commission is committed with it).
- ``purchase_rollups`` follow by a trigger on ``purchases`` (migration 0011), in the same transaction.
"""

from __future__ import annotations

import base64
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import exists, func, text, tuple_
from sqlmodel import Session, col, select

from tenants.accounts.service import validate_email
from tenants.contacts.service import ContactChanges, upsert_by_email
from tenants.conversions.service import enqueue_conversion
from tenants.errors import Conflict, Invalid, NotFound
from tenants.identity.service import link_visitor
from tenants.isolation import current_tenant_id
from tenants.models import (
    Contact,
    ConversionKind,
    Evidence,
    Purchase,
    PurchaseReference,
    PurchaseRefund,
    PurchaseSource,
    PurchaseStatus,
    Visitor,
    new_id,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.partners.commissions import apply_refunds, record_new_purchase_commissions
from tenants.partners.referrals import is_approved_partner
from tenants.purchases.currencies import is_currency
from tenants.security.tokens import get_signer
from tenants.tracking.visitors import VISITOR_PURPOSE

__all__ = [
    "MAX_ITEMS",
    "MAX_PAGE",
    "RECORDED_TASK",
    "REFUNDED_TASK",
    "Buyer",
    "ContactPurchases",
    "Item",
    "Order",
    "PurchasePage",
    "Recorded",
    "Refunded",
    "contact_purchase_totals",
    "find_buyer",
    "get_purchase",
    "list_purchases",
    "list_refunds",
    "record_cumulative_refund",
    "record_purchase",
    "record_refund",
    "refund_purchase",
]

RECORDED_TASK = "trailmark.purchases.recorded"
REFUNDED_TASK = "trailmark.purchases.refunded"
MAX_ITEMS = 100
MAX_PAGE = 500
MAX_AMOUNT = 10**13
"""Minor units; far above any real order, far below the bigint limit even summed in a rollup."""
EXTERNAL_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
"""Printable ASCII without spaces: order, session, invoice and refund ids as shops and Stripe write them."""
PRODUCT_KEY_LENGTH = 200
PROMO_CODE_LENGTH = 64


@dataclass(frozen=True)
class Item:
    product: str
    """The tenant's product key (a Stripe product id, a SKU): partner programs match their products on it."""
    quantity: int = 1
    unit_amount: int = 0
    name: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"product": self.product, "name": self.name, "quantity": self.quantity, "unit_amount": self.unit_amount}


@dataclass(frozen=True)
class Buyer:
    """Who bought, in order of precedence: a contact id, the visitor token the shop passed (when that browser
    is identified), else the email (the contact is created if new, as a form does)."""

    contact_id: UUID | None = None
    visitor_token: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True)
class Order:
    source: PurchaseSource
    external_id: str
    amount: int
    """What the buyer paid, tax included, in minor units."""
    currency: str
    buyer: Buyer
    tax: int = 0
    items: Sequence[Item] = ()
    subscription_id: str | None = None
    occurred_at: datetime | None = None
    references: Sequence[str] = ()
    """Payment ids that also name this purchase (a payment intent, an invoice), so refunds find it."""
    promo_code: str | None = None
    """A code the buyer typed at checkout: a partner's promo code credits that partner."""
    partner_id: UUID | None = None
    """A partner the tenant names explicitly (it must be an approved partner): it beats every referral."""


@dataclass(frozen=True)
class Recorded:
    purchase: Purchase
    created: bool
    """False when the order was already stored (the same external id or payment): nothing changed."""


@dataclass(frozen=True)
class Refunded:
    purchase: Purchase | None
    """None while the refund waits for its purchase."""
    created: bool
    """False for a refund already stored (a redelivery)."""


@dataclass(frozen=True)
class PurchasePage:
    items: list[Purchase]
    next_cursor: str | None


@dataclass
class ContactPurchases:
    """A contact's purchases in sum: how many, and the revenue net of refunds per currency."""

    count: int = 0
    totals: dict[str, int] = field(default_factory=dict)


def _lock(session: Session, keys: Iterable[str]) -> None:
    """Transaction-level advisory locks on ``keys`` of this tenant, in sorted order (no deadlocks), in one
    statement: taken in the order of the array (its ordinality), one row at a time."""
    tenant = current_tenant_id(session)
    ordered = [f"{tenant}:{key}" for key in sorted(set(keys))]
    if not ordered:
        return
    session.execute(
        text(
            """SELECT count(pg_advisory_xact_lock(hashtextextended(k.key, 0)))
               FROM (SELECT key FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS u(key, n) ORDER BY n) AS k"""
        ),
        {"keys": ordered},
    )


def _reference_key(source: PurchaseSource, reference: str) -> str:
    return f"purchase-ref:{source.value}:{reference}"


def _item_errors(items: Sequence[Item]) -> dict[str, str]:
    errors: dict[str, str] = {}
    if len(items) > MAX_ITEMS:
        errors["items"] = f"must be at most {MAX_ITEMS}"
    for index, item in enumerate(items):
        if not 1 <= len(item.product.strip()) <= PRODUCT_KEY_LENGTH:
            errors[f"items[{index}].product"] = f"must be 1 to {PRODUCT_KEY_LENGTH} characters"
        if not 1 <= item.quantity <= 1_000_000:
            errors[f"items[{index}].quantity"] = "must be 1 to 1000000"
        if not 0 <= item.unit_amount <= MAX_AMOUNT:
            errors[f"items[{index}].unit_amount"] = f"must be 0 to {MAX_AMOUNT}"
        if item.name is not None and len(item.name) > PRODUCT_KEY_LENGTH:
            errors[f"items[{index}].name"] = f"must be at most {PRODUCT_KEY_LENGTH} characters"
    return errors


def _validated(order: Order) -> Order:
    errors: dict[str, str] = {}
    if not EXTERNAL_ID.match(order.external_id):
        errors["external_id"] = "must be 1 to 255 printable characters without spaces"
    if not 0 <= order.amount <= MAX_AMOUNT:
        errors["amount"] = f"must be 0 to {MAX_AMOUNT} (minor units, e.g. cents)"
    if not 0 <= order.tax <= max(order.amount, 0):
        errors["tax"] = "must be 0 to the amount (the amount includes the tax)"
    currency = order.currency.strip().upper()
    if not is_currency(currency):
        errors["currency"] = "must be an ISO 4217 code such as USD or EUR"
    errors.update(_item_errors(order.items))
    if order.subscription_id is not None and not EXTERNAL_ID.match(order.subscription_id):
        errors["subscription_id"] = "must be 1 to 255 printable characters without spaces"
    if order.occurred_at is not None and order.occurred_at > utcnow() + timedelta(days=1):
        errors["occurred_at"] = "must not be in the future"
    if order.buyer.email is not None and order.buyer.email.strip():
        errors.update(validate_email(order.buyer.email.strip()))
    promo_code = (order.promo_code or "").strip() or None
    if promo_code is not None and len(promo_code) > PROMO_CODE_LENGTH:
        errors["promo_code"] = f"must be at most {PROMO_CODE_LENGTH} characters"
    if errors:
        raise Invalid("the purchase is invalid", errors)
    references = tuple(dict.fromkeys(r for r in (order.external_id, *order.references) if r and EXTERNAL_ID.match(r)))
    items = tuple(Item(i.product.strip(), i.quantity, i.unit_amount, i.name) for i in order.items)
    return Order(
        source=order.source,
        external_id=order.external_id,
        amount=order.amount,
        currency=currency,
        buyer=order.buyer,
        tax=order.tax,
        items=items,
        subscription_id=order.subscription_id,
        occurred_at=order.occurred_at,
        references=references,
        promo_code=promo_code,
        partner_id=order.partner_id,
    )


def _purchase_by_reference(session: Session, source: PurchaseSource, references: Sequence[str]) -> Purchase | None:
    if not references:
        return None
    # Two primary-key lookups, not a join: without fresh statistics (a young table, autovacuum behind) the
    # planner ran the join the other way round, reading every reference for every purchase: 0.7 s per order
    # at 700 purchases in bench/purchases.py, growing with the square of the purchases.
    purchase_id = session.exec(
        select(PurchaseReference.purchase_id)
        .where(PurchaseReference.source == source, col(PurchaseReference.reference).in_(list(references)))
        .limit(1)
    ).first()
    return session.get(Purchase, (current_tenant_id(session), purchase_id)) if purchase_id else None


def record_purchase(session: Session, order: Order, *, commissions_now: bool = False) -> Recorded:
    """Store a sale once: the purchase already stored under this external id (409 if its amount or currency
    differ) or payment reference, or a new one on the buyer's contact with a snapshot of its touches, the
    refunds that waited for it applied, and :data:`RECORDED_TASK` enqueued in this transaction (with
    ``commissions_now``, its commissions are stored in this transaction instead)."""
    order = _validated(order)
    if order.partner_id is not None and not is_approved_partner(session, order.partner_id):
        raise Invalid("the partner named is not an approved partner", {"partner_id": "not an approved partner"})
    _lock(
        session,
        [
            f"purchase:{order.source.value}:{order.external_id}",
            *(_reference_key(order.source, r) for r in order.references),
        ],
    )
    same_id = session.exec(
        select(Purchase).where(Purchase.source == order.source, Purchase.external_id == order.external_id)
    ).first()
    if same_id is not None:
        if (same_id.amount, same_id.currency) != (order.amount, order.currency):
            raise Conflict(
                f"the {order.source.value} purchase {order.external_id} was recorded with"
                f" {same_id.amount} {same_id.currency}, not {order.amount} {order.currency}"
            )
        _add_references(session, same_id, order.references, commissions_now)
        return Recorded(same_id, created=False)
    existing = _purchase_by_reference(session, order.source, order.references)
    if existing is not None:  # the same payment under another id (a subscription's invoice and its checkout)
        _add_references(session, existing, order.references, commissions_now)
        return Recorded(existing, created=False)
    contact, visitor = find_buyer(session, order.buyer, detail={"purchase": order.external_id})
    # The contact's row lock orders its purchases, so exactly one of them is its first.
    session.exec(select(Contact.id).where(Contact.id == contact.id).with_for_update()).one()
    earlier = session.exec(select(exists().where(col(Purchase.contact_id) == contact.id))).one()
    purchase = Purchase(
        contact_id=contact.id,
        visitor_id=visitor.id if visitor else None,
        source=order.source,
        external_id=order.external_id,
        amount=order.amount,
        tax=order.tax,
        currency=order.currency,
        items=[item.as_json() for item in order.items],
        subscription_id=order.subscription_id,
        promo_code=order.promo_code,
        partner_id=order.partner_id,
        first_touch=contact.first_touch or (visitor.first_touch if visitor else None),
        last_touch=contact.last_touch or (visitor.last_touch if visitor else None),
        new_customer=not earlier,
        occurred_at=order.occurred_at or utcnow(),
    )
    session.add(purchase)
    session.flush()
    _add_references(session, purchase, order.references, commissions_now)
    if commissions_now:
        record_new_purchase_commissions(session, purchase)
    else:
        outbox.enqueue(session, RECORDED_TASK, str(purchase.id))
    enqueue_conversion(session, ConversionKind.PURCHASE, purchase.id)
    return Recorded(purchase, created=True)


def _add_references(
    session: Session, purchase: Purchase, references: Sequence[str], commissions_now: bool = False
) -> None:
    """Name ``purchase`` by these references too (first come keeps a reference), and apply the refunds that
    waited for any of them."""
    if not references:
        return
    session.execute(
        text(
            """INSERT INTO purchase_references (tenant_id, source, reference, purchase_id)
               SELECT :tenant_id, :source, r, :purchase_id FROM unnest(CAST(:refs AS text[])) AS r
               ON CONFLICT DO NOTHING"""
        ),
        {
            "tenant_id": current_tenant_id(session),
            "source": PurchaseSource(purchase.source).value,
            "refs": list(references),
            "purchase_id": purchase.id,
        },
    )
    claimed = session.execute(
        text(
            """UPDATE purchase_refunds SET purchase_id = :purchase_id
               WHERE purchase_id IS NULL AND source = :source AND match_refs && CAST(:refs AS text[])"""
        ),
        {"purchase_id": purchase.id, "source": PurchaseSource(purchase.source).value, "refs": list(references)},
    ).rowcount  # type: ignore[attr-defined]
    if claimed:
        _apply_refunds(session, purchase, commissions_now)


def find_buyer(
    session: Session, buyer: Buyer, *, detail: dict[str, Any] | None = None
) -> tuple[Contact, Visitor | None]:
    """The buyer's contact (and browser, when its token is genuine): ``contact_id`` if given; else the contact
    of the identified browser; else the contact with the email, created if new, and an anonymous browser of
    the token is linked to it (form evidence: a checkout's email is self-asserted, as a form's)."""
    visitor = _visitor_of_token(session, buyer.visitor_token)
    if buyer.contact_id is not None:
        contact = session.get(Contact, (current_tenant_id(session), buyer.contact_id))
        if contact is None:
            raise Invalid("the buyer is unknown", {"contact_id": "no contact has this id"})
        while contact.merged_into is not None:  # a merged-away contact lives on in the one it was merged into
            contact = session.get(Contact, (current_tenant_id(session), contact.merged_into))
            assert contact is not None
        return contact, visitor
    if visitor is not None and visitor.contact_id is not None:
        contact = session.get(Contact, (current_tenant_id(session), visitor.contact_id))
        if contact is not None:
            return contact, visitor
    email = (buyer.email or "").strip()
    if not email:
        raise Invalid(
            "the buyer is unknown",
            {"email": "is required unless contact_id or the visitor token of an identified browser is given"},
        )
    contact, created = upsert_by_email(
        session, ContactChanges(email=email, first_name=buyer.first_name, last_name=buyer.last_name)
    )
    if visitor is not None:
        # A checkout identifies its browser as a form does: a contact it creates is a new lead of the partner
        # whose link brought that browser (first and last referrer), an existing one moves its last referrer.
        link_visitor(
            session,
            visitor_id=visitor.id,
            contact_id=contact.id,
            evidence=Evidence.FORM,
            detail=detail or {},
            new_contact=created,
        )
    return contact, visitor


def _visitor_of_token(session: Session, token: str | None) -> Visitor | None:
    """The browser a genuine visitor token of this tenant names (a token that fails is simply not used)."""
    if not token:
        return None
    claims = get_signer().verify(token, VISITOR_PURPOSE, current_tenant_id(session))
    if claims is None:
        return None
    tenant_id = current_tenant_id(session)
    # Its hits may still be in the ingest stream: the browser exists from now on either way.
    session.execute(
        text(
            """INSERT INTO visitors (tenant_id, id, first_seen_at, last_seen_at, created_at)
               VALUES (:t, :v, :now, :now, :now) ON CONFLICT DO NOTHING"""
        ),
        {"t": tenant_id, "v": claims.subject, "now": utcnow()},
    )
    return session.get(Visitor, (tenant_id, claims.subject))


def get_purchase(session: Session, purchase_id: UUID) -> Purchase:
    purchase = session.get(Purchase, (current_tenant_id(session), purchase_id))
    if purchase is None:
        raise NotFound("purchase not found")
    return purchase


def list_refunds(session: Session, purchase_id: UUID) -> list[PurchaseRefund]:
    """A purchase's refunds, oldest first."""
    return list(
        session.exec(
            select(PurchaseRefund)
            .where(PurchaseRefund.purchase_id == purchase_id)
            .order_by(col(PurchaseRefund.occurred_at), col(PurchaseRefund.id))
        )
    )


def refund_purchase(
    session: Session,
    purchase_id: UUID,
    *,
    amount: int | None = None,
    refund_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Refunded:
    """The tenant's refund of a purchase: ``amount`` (None: all that remains), at most what remains (422).
    With a ``refund_id``, a repeat of the same refund changes nothing."""
    if refund_id is not None and not EXTERNAL_ID.match(refund_id):
        raise Invalid("the refund is invalid", {"refund_id": "must be 1 to 255 printable characters without spaces"})
    get_purchase(session, purchase_id)  # 404 before any lock
    _lock(session, [f"purchase-refunds:{purchase_id}"])
    purchase = session.exec(select(Purchase).where(Purchase.id == purchase_id).with_for_update()).one()
    payment_ref = str(purchase.id)
    if refund_id is not None:
        earlier = session.exec(
            select(PurchaseRefund).where(
                PurchaseRefund.source == PurchaseSource.API,
                PurchaseRefund.payment_ref == payment_ref,
                PurchaseRefund.external_id == refund_id,
            )
        ).first()
        if earlier is not None:
            return Refunded(purchase, created=False)
    remaining = purchase.amount - purchase.refunded_amount
    if amount is None:
        if remaining == 0:
            raise Invalid("nothing is left to refund", {"amount": "the purchase is refunded in full"})
        amount = remaining
    if amount <= 0:
        raise Invalid("the refund is invalid", {"amount": "must be at least 1 (minor units)"})
    if amount > remaining:
        raise Invalid("the refund is larger than what remains", {"amount": f"must be at most {remaining}"})
    session.add(
        PurchaseRefund(
            purchase_id=purchase.id,
            source=PurchaseSource.API,
            payment_ref=payment_ref,
            external_id=refund_id or f"api:{utcnow().isoformat()}:{amount}:{remaining}",
            amount=amount,
            occurred_at=occurred_at or utcnow(),
        )
    )
    session.flush()
    _apply_refunds(session, purchase)
    return Refunded(purchase, created=True)


def record_refund(
    session: Session,
    *,
    source: PurchaseSource,
    payment_ref: str,
    external_id: str,
    amount: int,
    match_refs: Sequence[str],
    occurred_at: datetime,
) -> Refunded:
    """A refund reported by a payment provider: stored once per ``(source, payment_ref, external_id)``, applied
    to the purchase one of ``match_refs`` names, or kept until that purchase is recorded."""
    refs = list(dict.fromkeys([payment_ref, *match_refs]))
    _lock(session, [_reference_key(source, r) for r in refs])
    return _store_refund(
        session,
        source=source,
        payment_ref=payment_ref,
        external_id=external_id,
        amount=amount,
        refs=refs,
        occurred_at=occurred_at,
    )


def record_cumulative_refund(
    session: Session,
    *,
    source: PurchaseSource,
    payment_ref: str,
    refunded_total: int,
    match_refs: Sequence[str],
    occurred_at: datetime,
    commissions_now: bool = False,
) -> Refunded:
    """A provider's running total of what was refunded of one payment (Stripe's ``amount_refunded``): the part
    beyond what is stored for that payment becomes a refund. Redelivered or out of order, a total never
    counts twice and an older, smaller total adds nothing."""
    refs = list(dict.fromkeys([payment_ref, *match_refs]))
    _lock(session, [_reference_key(source, r) for r in refs])
    stored = session.exec(
        select(func.coalesce(func.sum(PurchaseRefund.amount), 0)).where(
            PurchaseRefund.source == source, PurchaseRefund.payment_ref == payment_ref
        )
    ).one()
    beyond = refunded_total - int(stored)
    if beyond <= 0:
        purchase = _purchase_by_reference(session, source, refs)
        return Refunded(purchase, created=False)
    return _store_refund(
        session,
        source=source,
        payment_ref=payment_ref,
        external_id=f"total:{refunded_total}",
        amount=beyond,
        refs=refs,
        occurred_at=occurred_at,
        commissions_now=commissions_now,
    )


def _store_refund(
    session: Session,
    *,
    source: PurchaseSource,
    payment_ref: str,
    external_id: str,
    amount: int,
    refs: list[str],
    occurred_at: datetime,
    commissions_now: bool = False,
) -> Refunded:
    if amount <= 0:
        raise Invalid("the refund is invalid", {"amount": "must be at least 1 (minor units)"})
    purchase = _purchase_by_reference(session, source, refs)
    inserted = session.execute(
        text(
            """INSERT INTO purchase_refunds (tenant_id, id, purchase_id, source, payment_ref, external_id,
                   match_refs, amount, occurred_at, created_at)
               VALUES (:tenant_id, :id, :purchase_id, :source, :payment_ref, :external_id, CAST(:refs AS text[]),
                   :amount, :occurred_at, :now)
               ON CONFLICT (tenant_id, source, payment_ref, external_id) DO NOTHING"""
        ),
        {
            "tenant_id": current_tenant_id(session),
            "id": new_id(),
            "purchase_id": purchase.id if purchase else None,
            "source": source.value,
            "payment_ref": payment_ref,
            "external_id": external_id,
            "refs": refs,
            "amount": amount,
            "occurred_at": occurred_at,
            "now": utcnow(),
        },
    ).rowcount  # type: ignore[attr-defined]
    if inserted and purchase is not None:
        _apply_refunds(session, purchase, commissions_now)
    return Refunded(purchase, created=bool(inserted))


def _apply_refunds(session: Session, purchase: Purchase, commissions_now: bool = False) -> None:
    """Set the refunded amount to all the purchase's refunds (never beyond its amount) and the status to
    match; when it changed, enqueue :data:`REFUNDED_TASK` (or, ``commissions_now``, apply it to the
    commissions at once)."""
    session.refresh(purchase, with_for_update=True)  # first: the sum below then sees every committed refund
    total = session.exec(
        select(func.coalesce(func.sum(PurchaseRefund.amount), 0)).where(PurchaseRefund.purchase_id == purchase.id)
    ).one()
    refunded = min(int(total), purchase.amount)
    if refunded == purchase.refunded_amount:
        return
    purchase.refunded_amount = refunded
    purchase.status = (
        PurchaseStatus.PAID
        if refunded == 0
        else PurchaseStatus.REFUNDED
        if refunded == purchase.amount
        else PurchaseStatus.PARTIALLY_REFUNDED
    )
    session.add(purchase)
    session.flush()
    if commissions_now:
        apply_refunds(session, purchase.id)
    else:
        outbox.enqueue(session, REFUNDED_TASK, str(purchase.id))


def _cursor(purchase: Purchase) -> str:
    raw = f"{purchase.occurred_at.isoformat()}|{purchase.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        at, purchase_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        return datetime.fromisoformat(at), UUID(purchase_id)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the cursor is not one this API returned", {"cursor": "invalid"}) from None


def list_purchases(
    session: Session,
    *,
    contact_id: UUID | None = None,
    status: PurchaseStatus | None = None,
    source: PurchaseSource | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> PurchasePage:
    """Purchases newest first (by when they happened), one keyset page at a time; only one contact's, one
    status's or one source's when those are given."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit is out of range", {"limit": f"must be 1 to {MAX_PAGE}"})
    statement = select(Purchase).order_by(col(Purchase.occurred_at).desc(), col(Purchase.id).desc()).limit(limit + 1)
    if contact_id is not None:
        statement = statement.where(Purchase.contact_id == contact_id)
    if status is not None:
        statement = statement.where(Purchase.status == status)
    if source is not None:
        statement = statement.where(Purchase.source == source)
    if cursor:
        statement = statement.where(tuple_(col(Purchase.occurred_at), col(Purchase.id)) < tuple_(*_read_cursor(cursor)))
    rows = list(session.exec(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    return PurchasePage(rows, _cursor(rows[-1]) if more and rows else None)


def contact_purchase_totals(session: Session, contact_ids: Sequence[UUID]) -> dict[UUID, ContactPurchases]:
    """For each of these contacts (a page of a list), how many purchases and the revenue net of refunds per
    currency; contacts without purchases are left out."""
    if not contact_ids:
        return {}
    rows = session.execute(
        select(
            col(Purchase.contact_id),
            col(Purchase.currency),
            func.count(),
            func.sum(col(Purchase.amount) - col(Purchase.refunded_amount)),
        )
        .where(col(Purchase.contact_id).in_(list(contact_ids)))
        .group_by(col(Purchase.contact_id), col(Purchase.currency))
    ).all()
    totals: dict[UUID, ContactPurchases] = defaultdict(ContactPurchases)
    for contact_id, currency, count, net in rows:
        summary = totals[contact_id]
        summary.count += int(count)
        summary.totals[currency] = int(net)
    return dict(totals)
