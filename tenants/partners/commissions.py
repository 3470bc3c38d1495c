"""Commissions: the one implementation of crediting a purchase, computing what it earns, taking back what its
refunds take back, and approving and rejecting — used by the purchase workers, beat, the REST API and the
dashboard alike.

- A purchase credits at most one partner (``purchase_credits``, one row per purchase), chosen by
  :func:`tenants.partners.referrals.referrer_for_purchase`; a renewal of a subscription stays with the partner its
  first payment credited, for the program's ``recurring_months``.
- Each program product among the purchase's items earns its level-1 rate for the partner and, in a two-tier
  program, its level-2 rate for the partner's recruiter. The rates are copied onto the commission.
- The keys of migration 0014 make every insert idempotent (``ON CONFLICT DO NOTHING``): a redelivered or
  concurrent task inserts nothing, so it mails nothing either.
- A refund reduces an unpaid commission in proportion to the refunded share of the purchase (rounded half up to
  the minor unit), and books a negative ``refund_adjustment`` line for one already on a payout. Both derive from
  the purchase's refunded total, so applying a refund twice changes nothing.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import func, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session, col, select

from tenants.errors import Conflict, Invalid, NotFound
from tenants.isolation import current_tenant_id
from tenants.models import (
    Commission,
    CommissionKind,
    CommissionStatus,
    Contact,
    Partner,
    PartnerStatus,
    Program,
    ProgramProduct,
    Purchase,
    PurchaseCredit,
    new_id,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.partners.referrals import Credit, CreditSource, CreditStatus, referrer_for_purchase
from tenants.purchases.currencies import format_money

__all__ = [
    "MAX_PAGE",
    "CommissionTotals",
    "apply_refunds",
    "approve_commission",
    "approve_due_commissions",
    "commission_totals",
    "credit_purchase",
    "get_commission",
    "list_commissions",
    "purchase_commissions",
    "record_commissions",
    "record_new_purchase_commissions",
    "reject_commission",
]

MAIL_TASK = "trailmark.mail.send"
MAX_PAGE = 500
EARNED_KINDS = (CommissionKind.SALE, CommissionKind.RECURRING)
SUBSCRIPTION_SOURCE = "subscription"


def _add_months(at: datetime, months: int) -> datetime:
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def _first_of_subscription(session: Session, purchase: Purchase) -> Purchase | None:
    """The subscription's first payment, when ``purchase`` is a later one (a renewal)."""
    if purchase.subscription_id is None:
        return None
    first = session.exec(
        select(Purchase)
        .where(Purchase.subscription_id == purchase.subscription_id, Purchase.source == purchase.source)
        .order_by(col(Purchase.occurred_at), col(Purchase.created_at), col(Purchase.id))
        .limit(1)
    ).first()
    return first if first is not None and first.id != purchase.id else None


def _store_credit(session: Session, purchase: Purchase, credit: Credit, source: str | None = None) -> PurchaseCredit:
    """Store the credit, or find the one a concurrent run stored first."""
    tenant_id = current_tenant_id(session)
    # One buyer's credits with one partner are made one at a time, so exactly one of them is its first: the
    # customer the partners report counts (the buyer's purchases are credited by concurrent tasks).
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"{tenant_id}:partner-customer:{purchase.contact_id}:{credit.partner_id}"},
    )
    earlier = session.exec(
        select(PurchaseCredit.purchase_id)
        .where(
            PurchaseCredit.contact_id == purchase.contact_id,
            PurchaseCredit.partner_id == credit.partner_id,
            PurchaseCredit.status != CreditStatus.REFUSED.value,
            PurchaseCredit.purchase_id != purchase.id,
        )
        .limit(1)
    ).first()
    stored = session.scalars(
        insert(PurchaseCredit)
        .values(
            tenant_id=tenant_id,
            purchase_id=purchase.id,
            contact_id=purchase.contact_id,
            partner_id=credit.partner_id,
            program_id=credit.program_id,
            source=source or credit.source.value,
            status=credit.status.value,
            reason=credit.reason,
            sid=credit.sid,
            new_customer=earlier is None and credit.status != CreditStatus.REFUSED,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(PurchaseCredit),
        execution_options={"populate_existing": True},
    ).first()
    if stored is None:  # a concurrent run stored it first: read what it stored
        stored = session.get(PurchaseCredit, (tenant_id, purchase.id), populate_existing=True)
    assert stored is not None
    return stored


def credit_purchase(session: Session, purchase: Purchase) -> PurchaseCredit | None:
    """The partner this purchase credits and why, decided once and stored (None: nobody referred it, or it is a
    renewal past the program's recurring months)."""
    stored = session.get(PurchaseCredit, (current_tenant_id(session), purchase.id))
    return stored if stored is not None else _decide_credit(session, purchase)


def _decide_credit(session: Session, purchase: Purchase) -> PurchaseCredit | None:
    """Pick the partner by the referral rules and store the credit (none was stored for the purchase)."""
    tenant_id = current_tenant_id(session)
    first = _first_of_subscription(session, purchase)
    credit: Credit | None
    if first is not None:
        first_credit = credit_purchase(session, first)  # it may not have been processed yet
        if first_credit is None:
            return None
        program = session.get(Program, (tenant_id, first_credit.program_id))
        assert program is not None
        months = program.recurring_months
        if months is not None and purchase.occurred_at > _add_months(first.occurred_at, months):
            return None
        reason = (
            f"renewal of subscription {purchase.subscription_id}, which stays with the partner of its first payment"
            f" ({first.occurred_at.date().isoformat()}: {first_credit.reason})"
        )
        credit = Credit(
            first_credit.partner_id, first_credit.program_id, CreditSource(first_credit.source),
            CreditStatus(first_credit.status), reason, sid=first_credit.sid,
        )  # fmt: skip
        return _store_credit(session, purchase, credit, SUBSCRIPTION_SOURCE)
    try:
        credit = referrer_for_purchase(
            session, purchase.contact_id, purchase.visitor_id, purchase.occurred_at, purchase.promo_code,
            purchase.partner_id,
        )  # fmt: skip
    except Invalid:  # the partner the order named was suspended since: the referrals decide
        credit = referrer_for_purchase(
            session, purchase.contact_id, purchase.visitor_id, purchase.occurred_at, purchase.promo_code, None
        )
    return _store_credit(session, purchase, credit) if credit is not None else None


def _earned(kind: str, value: int, basis: int, quantity: int) -> int:
    """Percent in basis points of the basis, rounded half up to the minor unit; flat per unit."""
    return (basis * value + 5000) // 10000 if kind == "percent" else value * quantity


def _item_amounts(purchase: Purchase) -> list[tuple[dict[str, Any], int, int]]:
    """Each item with its quantity and basis: its amount, scaled down when the items add up to more than the
    purchase's amount net of tax (a discount the shop applied to the whole order, such as a Stripe coupon)."""
    items = [(item, int(item.get("quantity") or 1)) for item in purchase.items]
    amounts = [quantity * int(item.get("unit_amount") or 0) for item, quantity in items]
    net, listed = max(purchase.amount - purchase.tax, 0), sum(amounts)
    if listed > net:
        amounts = [(amount * net) // listed for amount in amounts]
    return [(item, quantity, amount) for (item, quantity), amount in zip(items, amounts, strict=True)]


def _rates(products: dict[str, ProgramProduct], purchase: Purchase, level: int) -> list[dict[str, Any]]:
    rates = []
    for item, quantity, basis in _item_amounts(purchase):
        product = products.get(str(item.get("product")))
        if product is None:
            continue
        kind, value = (
            (product.level1_kind, product.level1_value) if level == 1 else (product.level2_kind, product.level2_value)
        )
        if kind is None or value is None:
            continue
        rates.append({
            "product": product.product, "quantity": quantity, "basis": basis, "kind": kind, "value": value,
            "amount": _earned(kind, value, basis, quantity),
        })  # fmt: skip
    return rates


@dataclass(frozen=True)
class _Earner:
    partner: Partner
    level: int


def _earners(session: Session, credit: PurchaseCredit, program: Program) -> list[_Earner]:
    tenant_id = current_tenant_id(session)
    partner = session.get(Partner, (tenant_id, credit.partner_id))
    if partner is None:
        return []
    earners = [_Earner(partner, 1)]
    if program.tiers == 2 and partner.parent_partner_id is not None:
        parent = session.get(Partner, (tenant_id, partner.parent_partner_id))
        if parent is not None and parent.status == PartnerStatus.APPROVED:
            earners.append(_Earner(parent, 2))
    return earners


def _purchase_locked(session: Session, purchase_id: UUID) -> Purchase | None:
    """The purchase, re-read after taking its commissions lock: crediting and refunding one purchase run one at
    a time, so a refund committed while its commissions were being made is never missed."""
    tenant_id = current_tenant_id(session)
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"{tenant_id}:purchase-commissions:{purchase_id}"},
    )
    purchase = session.get(Purchase, (tenant_id, purchase_id))
    if purchase is not None:
        session.refresh(purchase)
    return purchase


def record_commissions(session: Session, purchase_id: UUID) -> list[Commission]:
    """Credit the purchase and store what it earns, once, mailing each partner that earned; then apply the
    refunds that came before. Returns the commissions this call created (none on a repeat)."""
    purchase = _purchase_locked(session, purchase_id)
    if purchase is None:
        return []
    return _earn(session, purchase, credit_purchase(session, purchase))


def record_new_purchase_commissions(session: Session, purchase: Purchase) -> list[Commission]:
    """:func:`record_commissions` for a purchase inserted by this very transaction (the Stripe drain's): no
    other transaction sees it yet, so there is no lock to take, nothing to re-read and no stored credit."""
    return _earn(session, purchase, _decide_credit(session, purchase))


def _earn(session: Session, purchase: Purchase, credit: PurchaseCredit | None) -> list[Commission]:
    tenant_id = current_tenant_id(session)
    if credit is None or credit.status == CreditStatus.REFUSED:
        return []
    program = session.get(Program, (tenant_id, credit.program_id))
    assert program is not None
    products = {
        p.product: p for p in session.exec(select(ProgramProduct).where(ProgramProduct.program_id == program.id))
    }
    held = credit.status == CreditStatus.HELD
    kind = CommissionKind.RECURRING if credit.source == SUBSCRIPTION_SOURCE else CommissionKind.SALE
    payable_at = None if held else purchase.occurred_at + timedelta(days=program.hold_days)
    created: list[Commission] = []
    for earner in _earners(session, credit, program):
        rates = _rates(products, purchase, earner.level)
        earned = sum(rate["amount"] for rate in rates)
        if not rates or earned <= 0:
            continue
        reason = f"held for review: {credit.reason}" if held else credit.reason
        if earner.level == 2:
            reason = f"level 2: recruiter of the selling partner ({reason})"
        now = utcnow()
        commission = session.scalars(
            insert(Commission)
            .values(
                tenant_id=tenant_id,
                id=new_id(),
                purchase_id=purchase.id,
                partner_id=earner.partner.id,
                program_id=program.id,
                level=earner.level,
                kind=kind.value,
                refund_key="",
                basis=sum(rate["basis"] for rate in rates),
                earned_amount=earned,
                amount=earned,
                currency=purchase.currency,
                rates=rates,
                status=CommissionStatus.PENDING.value,
                payable_at=payable_at,
                reason=reason,
                sid=credit.sid if earner.level == 1 else "",
                created_at=now,
                status_changed_at=now,
            )
            .on_conflict_do_nothing()
            .returning(Commission),
            execution_options={"populate_existing": True},
        ).first()
        if commission is not None:  # None: stored before (a redelivery, a concurrent run)
            created.append(commission)
            _mail_earned(session, earner.partner, commission, program)
    if purchase.refunded_amount:
        apply_refunds(session, purchase.id)
    return created


def _mail_earned(session: Session, partner: Partner, commission: Commission, program: Program) -> None:
    contact = session.get(Contact, (current_tenant_id(session), partner.contact_id))
    if contact is None:
        return
    when = (
        f"It becomes payable on {commission.payable_at.date().isoformat()}, once the hold of the program ends."
        if commission.payable_at
        else "It is held for review before it becomes payable."
    )
    body = (
        f"You earned a commission of {format_money(commission.amount, commission.currency)} in {program.name}.\n\n"
        f"{when}\nYour partner portal lists it with its reason."
    )
    outbox.enqueue(session, MAIL_TASK, contact.email, f"You earned a commission in {program.name}", body)


def _share(amount: int, part: int, whole: int) -> int:
    """``amount * part / whole``, rounded half up to the minor unit."""
    return (2 * amount * part + whole) // (2 * whole) if whole else 0


def apply_refunds(session: Session, purchase_id: UUID) -> None:
    """Bring the purchase's commissions in line with its refunded total: an unpaid commission falls in
    proportion (reversed when nothing is left), one already on a payout gets a negative line for the next payout.
    Idempotent: the same total changes nothing again; the earned lines are locked, so concurrent runs queue."""
    tenant_id = current_tenant_id(session)
    purchase = _purchase_locked(session, purchase_id)
    if purchase is None or purchase.amount <= 0:
        return
    lines = session.exec(
        select(Commission)
        .where(Commission.purchase_id == purchase.id, col(Commission.kind).in_([k.value for k in EARNED_KINDS]))
        .order_by(col(Commission.level), col(Commission.id))
        .with_for_update()
    ).all()
    now = utcnow()
    for line in lines:
        if line.status == CommissionStatus.REJECTED:
            continue
        taken_back = -int(
            session.exec(
                select(func.coalesce(func.sum(Commission.amount), 0)).where(
                    Commission.purchase_id == purchase.id,
                    Commission.partner_id == line.partner_id,
                    Commission.level == line.level,
                    Commission.kind == CommissionKind.REFUND_ADJUSTMENT,
                )
            ).one()
        )
        due_back = _share(line.earned_amount, purchase.refunded_amount, purchase.amount)
        missing = due_back - (line.earned_amount - line.amount) - taken_back
        if missing <= 0:
            continue
        if line.payout_id is None:
            line.amount -= missing
            if line.amount == 0:
                line.status, line.status_changed_at = CommissionStatus.REVERSED, now
            session.add(line)
            continue
        session.execute(
            insert(Commission)
            .values(
                tenant_id=tenant_id,
                id=new_id(),
                purchase_id=purchase.id,
                partner_id=line.partner_id,
                program_id=line.program_id,
                level=line.level,
                kind=CommissionKind.REFUND_ADJUSTMENT.value,
                refund_key=f"refunded:{purchase.refunded_amount}",
                basis=line.basis,
                earned_amount=0,
                amount=-missing,
                currency=line.currency,
                rates=line.rates,
                status=CommissionStatus.APPROVED.value,
                payable_at=now,
                sid=line.sid,
                created_at=now,
                status_changed_at=now,
                reason=(
                    f"refund of {format_money(purchase.refunded_amount, purchase.currency)} of"
                    f" {format_money(purchase.amount, purchase.currency)} after the commission was paid out"
                ),
            )
            .on_conflict_do_nothing()
        )
    session.flush()


def approve_due_commissions(session: Session, now: datetime | None = None) -> int:
    """Approve the pending commissions whose hold ended (beat); held ones (no ``payable_at``) wait for review."""
    at = now or utcnow()
    result = session.execute(
        update(Commission)
        .where(
            col(Commission.status) == CommissionStatus.PENDING.value,
            col(Commission.payable_at).is_not(None),
            col(Commission.payable_at) <= at,
        )
        .values(status=CommissionStatus.APPROVED.value, status_changed_at=at)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def get_commission(session: Session, commission_id: UUID) -> Commission:
    commission = session.get(Commission, (current_tenant_id(session), commission_id))
    if commission is None:
        raise NotFound("commission not found")
    return commission


def _locked(session: Session, commission_id: UUID) -> Commission:
    get_commission(session, commission_id)
    return session.exec(select(Commission).where(Commission.id == commission_id).with_for_update()).one()


def approve_commission(session: Session, commission_id: UUID) -> Commission:
    """The tenant approves a pending (or held) commission before its hold ends; approving an approved one changes
    nothing; any other status is 409."""
    commission = _locked(session, commission_id)
    if commission.status == CommissionStatus.APPROVED:
        return commission
    if commission.status != CommissionStatus.PENDING or commission.kind == CommissionKind.REFUND_ADJUSTMENT:
        raise Conflict(f"a {commission.status} commission cannot be approved")
    commission.status, commission.status_changed_at = CommissionStatus.APPROVED, utcnow()
    commission.payable_at = commission.payable_at or commission.status_changed_at
    session.add(commission)
    session.flush()
    return commission


def reject_commission(session: Session, commission_id: UUID, reason: str | None = None) -> Commission:
    """The tenant rejects a commission that is not on a payout (pending or approved); rejecting a rejected one
    changes nothing; one on a payout, reversed or a refund adjustment is 409."""
    commission = _locked(session, commission_id)
    if commission.status == CommissionStatus.REJECTED:
        return commission
    if (
        commission.status not in {CommissionStatus.PENDING, CommissionStatus.APPROVED}
        or commission.payout_id is not None
        or commission.kind == CommissionKind.REFUND_ADJUSTMENT
    ):
        raise Conflict(
            f"a {commission.status} commission{' on a payout' if commission.payout_id else ''} cannot be rejected"
        )
    commission.status, commission.status_changed_at = CommissionStatus.REJECTED, utcnow()
    if reason:
        commission.reason = f"rejected: {reason.strip()[:500]} ({commission.reason})"
    session.add(commission)
    session.flush()
    return commission


def list_commissions(
    session: Session,
    *,
    partner_id: UUID | None = None,
    status: CommissionStatus | None = None,
    payout_id: UUID | None = None,
    limit: int = 100,
) -> list[Commission]:
    """Newest first; in a portal session only the partner's own (row-level security)."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit is out of range", {"limit": f"must be 1 to {MAX_PAGE}"})
    statement = select(Commission).order_by(col(Commission.created_at).desc(), col(Commission.id).desc()).limit(limit)
    if partner_id is not None:
        statement = statement.where(Commission.partner_id == partner_id)
    if status is not None:
        statement = statement.where(Commission.status == status)
    if payout_id is not None:
        statement = statement.where(Commission.payout_id == payout_id)
    return list(session.exec(statement))


@dataclass(frozen=True)
class CommissionTotals:
    """A partner's money per currency and status (minor units); ``unpaid`` is approved and on no payout yet,
    refund adjustments included."""

    pending: dict[str, int]
    approved: dict[str, int]
    paid: dict[str, int]
    unpaid: dict[str, int]


def commission_totals(session: Session, partner_id: UUID) -> CommissionTotals:
    rows = session.execute(
        select(
            col(Commission.status),
            col(Commission.currency),
            col(Commission.payout_id).is_(None),
            func.sum(Commission.amount),
        )
        .where(Commission.partner_id == partner_id)
        .group_by(col(Commission.status), col(Commission.currency), col(Commission.payout_id).is_(None))
    ).all()
    totals: dict[str, dict[str, int]] = {"pending": {}, "approved": {}, "paid": {}, "unpaid": {}}
    for status, currency, unpaid, amount in rows:
        if status in totals:
            totals[status][currency] = totals[status].get(currency, 0) + int(amount)
        if status == CommissionStatus.APPROVED and unpaid:
            totals["unpaid"][currency] = totals["unpaid"].get(currency, 0) + int(amount)
    return CommissionTotals(**totals)


def purchase_commissions(session: Session, purchase_id: UUID) -> tuple[PurchaseCredit | None, list[Commission]]:
    """Who a purchase credited and why, and the commissions it earned (level, then oldest first)."""
    credit = session.get(PurchaseCredit, (current_tenant_id(session), purchase_id))
    rows = session.exec(
        select(Commission)
        .where(Commission.purchase_id == purchase_id)
        .order_by(col(Commission.level), col(Commission.created_at))
    ).all()
    return credit, list(rows)
