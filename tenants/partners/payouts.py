"""Payouts: batching each partner's approved commissions (refund adjustments included) once the balance reaches
the program's minimum, the mass-payment CSV, and marking a payout paid exactly once.

A payout's lines are the commissions whose ``payout_id`` names it. Marking it paid takes the payment's external
reference, unique per tenant: the same reference again answers the paid payout, another reference is 409.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tenants.errors import Conflict, Invalid, NotFound
from tenants.isolation import current_tenant_id
from tenants.models import (
    Commission,
    CommissionStatus,
    Contact,
    Partner,
    Payout,
    PayoutStatus,
    Program,
    utcnow,
)
from tenants.purchases.currencies import minor_unit_digits

__all__ = [
    "CSV_COLUMNS",
    "MarkedPaid",
    "create_payouts",
    "get_payout",
    "list_payouts",
    "mark_payout_paid",
    "next_payout",
    "payout_csv",
]

CSV_COLUMNS = ("email", "amount", "currency", "reference")
MAX_REFERENCE = 255


def create_payouts(session: Session) -> list[Payout]:
    """One payout per partner and currency whose approved, unpaid lines sum to at least the program's minimum
    (and above zero); a negative balance waits for later earnings. Concurrent calls queue on a lock, so no
    commission lands on two payouts."""
    tenant_id = current_tenant_id(session)
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"{tenant_id}:payouts"})
    balances = session.execute(
        select(col(Commission.partner_id), col(Commission.currency), func.sum(Commission.amount))
        .where(Commission.status == CommissionStatus.APPROVED, col(Commission.payout_id).is_(None))
        .group_by(col(Commission.partner_id), col(Commission.currency))
    ).all()
    minimums = dict(
        session.execute(
            select(col(Partner.id), col(Program.minimum_payout)).join(
                Program,
                (col(Program.tenant_id) == col(Partner.tenant_id)) & (col(Program.id) == col(Partner.program_id)),
            )
        ).all()
    )
    created = []
    for partner_id, currency, balance in sorted(balances, key=lambda row: (str(row[0]), row[1])):
        if int(balance) <= 0 or int(balance) < minimums.get(partner_id, 0):
            continue
        payout = Payout(partner_id=partner_id, amount=int(balance), currency=currency)
        session.add(payout)
        session.flush()
        session.execute(
            update(Commission)
            .where(
                col(Commission.partner_id) == partner_id,
                col(Commission.currency) == currency,
                col(Commission.status) == CommissionStatus.APPROVED.value,
                col(Commission.payout_id).is_(None),
            )
            .values(payout_id=payout.id)
        )
        created.append(payout)
    return created


def get_payout(session: Session, payout_id: UUID) -> Payout:
    payout = session.get(Payout, (current_tenant_id(session), payout_id))
    if payout is None:
        raise NotFound("payout not found")
    return payout


def list_payouts(
    session: Session, *, partner_id: UUID | None = None, status: PayoutStatus | None = None
) -> list[Payout]:
    """Newest first; in a portal session only the partner's own (row-level security)."""
    statement = select(Payout).order_by(col(Payout.created_at).desc(), col(Payout.id).desc()).limit(500)
    if partner_id is not None:
        statement = statement.where(Payout.partner_id == partner_id)
    if status is not None:
        statement = statement.where(Payout.status == status)
    return list(session.exec(statement))


@dataclass(frozen=True)
class MarkedPaid:
    payout: Payout
    changed: bool
    """False when this reference had marked it paid before (a retry)."""


def mark_payout_paid(session: Session, payout_id: UUID, external_reference: str) -> MarkedPaid:
    """Mark the payout and its lines paid with the payment's reference. The same reference again changes nothing;
    another reference on a paid payout, or a reference another payout holds, is 409."""
    reference = external_reference.strip()
    if not 1 <= len(reference) <= MAX_REFERENCE:
        raise Invalid("the reference is invalid", {"external_reference": f"must be 1 to {MAX_REFERENCE} characters"})
    get_payout(session, payout_id)
    payout = session.exec(select(Payout).where(Payout.id == payout_id).with_for_update()).one()
    if payout.status == PayoutStatus.PAID:
        if payout.external_reference == reference:
            return MarkedPaid(payout, changed=False)
        raise Conflict(f"the payout was paid with reference {payout.external_reference}")
    other = session.exec(
        select(Payout.id).where(Payout.external_reference == reference, Payout.id != payout.id)
    ).first()
    if other is not None:
        raise Conflict(f"the reference {reference} marked payout {other} paid")
    now = utcnow()
    payout.status, payout.external_reference, payout.paid_at = PayoutStatus.PAID, reference, now
    session.add(payout)
    try:
        with session.begin_nested():  # the unique key settles a race with another payout claiming the reference
            session.flush()
    except IntegrityError:
        raise Conflict(f"the reference {reference} marked another payout paid") from None
    session.execute(
        update(Commission)
        .where(col(Commission.payout_id) == payout.id)
        .values(status=CommissionStatus.PAID.value, status_changed_at=now)
    )
    return MarkedPaid(payout, changed=True)


def _major_units(amount: int, currency: str) -> str:
    digits = minor_unit_digits(currency)
    if digits == 0:
        return str(amount)
    whole, part = divmod(amount, 10**digits)
    return f"{whole}.{part:0{digits}d}"


def payout_csv(session: Session, payout_id: UUID) -> str:
    """The mass-payment file of one payout (PayPal Payouts' and Wise's batch columns): the payout e-mail (the
    partner's own when none is set), the amount in major units, the currency, and the payout's id as reference."""
    payout = get_payout(session, payout_id)
    partner = session.get(Partner, (current_tenant_id(session), payout.partner_id))
    assert partner is not None
    contact = session.get(Contact, (current_tenant_id(session), partner.contact_id))
    email = partner.payout_email or (contact.email if contact else "")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow([_safe_cell(email), _major_units(payout.amount, payout.currency), payout.currency, str(payout.id)])
    return out.getvalue()


def _safe_cell(value: str) -> str:
    # A cell starting with = + - @ runs as a formula in a spreadsheet.
    return f"'{value}" if value[:1] in {"=", "+", "-", "@"} else value


def next_payout(session: Session, partner_id: UUID) -> dict[str, int]:
    """What the partner's next payout would hold per currency now (approved, on no payout yet)."""
    totals: dict[str, int] = defaultdict(int)
    for currency, amount in session.execute(
        select(col(Commission.currency), func.sum(Commission.amount))
        .where(
            Commission.partner_id == partner_id,
            Commission.status == CommissionStatus.APPROVED,
            col(Commission.payout_id).is_(None),
        )
        .group_by(col(Commission.currency))
    ).all():
        totals[currency] += int(amount)
    return dict(totals)
