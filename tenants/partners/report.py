"""The partners report: clicks, leads, customers and revenue per partner, and clicks and leads per SubID, over a
range of UTC days, read from rollups only (never from the raw clicks or purchases), so a year answers as fast
as a day.

- clicks and leads: ``referral_rollups`` (migration 0014), kept by triggers in the transaction that writes
  ``referral_clicks`` and ``contact_referrers``; a lead is a new contact the partner referred (its first
  referrer binding), counted on the day it was bound, under the SubID of the click that bound it;
- purchases, customers (purchases that were their buyer's first) and revenue (net of refunds, per currency):
  ``purchase_rollups``' partner dimension, the partner code in the buyer's first or last touch at purchase
  time, matched to the partner's codes. ``purchase_rollups`` has no SubID, so money is per partner only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session

from tenants.errors import Invalid
from tenants.isolation import current_tenant_id
from tenants.reports.service import report_timeout

__all__ = ["MAX_REPORT_DAYS", "PartnerTotals", "PartnersReport", "SubIdTotals", "partners_report"]

MAX_REPORT_DAYS = 731
TOUCHES = ("first", "last")


@dataclass
class PartnerTotals:
    partner_id: UUID
    email: str
    status: str
    clicks: int = 0
    leads: int = 0
    purchases: int = 0
    customers: int = 0
    revenue: dict[str, int] = field(default_factory=dict)
    """Net of refunds, tax included, in minor units per currency."""


@dataclass(frozen=True)
class SubIdTotals:
    partner_id: UUID
    email: str
    sid: str
    """``""`` for clicks without a SubID."""
    clicks: int
    leads: int


@dataclass(frozen=True)
class PartnersReport:
    start: date
    end: date
    touch: str
    partners: list[PartnerTotals]
    sub_ids: list[SubIdTotals]


_PARTNERS = text(
    """SELECT p.id, c.email, p.status
       FROM partners p JOIN contacts c ON c.tenant_id = p.tenant_id AND c.id = p.contact_id
       WHERE p.tenant_id = :t AND (CAST(:program AS uuid) IS NULL OR p.program_id = CAST(:program AS uuid))
       ORDER BY c.email"""
)
_REFERRALS = text(
    """SELECT partner_id, sid, sum(clicks), sum(leads) FROM referral_rollups
       WHERE tenant_id = :t AND day BETWEEN :start AND :end GROUP BY partner_id, sid"""
)
_MONEY = text(
    """SELECT c.partner_id, r.currency, sum(r.purchases), sum(r.new_customers), sum(r.revenue)
       FROM purchase_rollups r JOIN partner_codes c ON c.tenant_id = r.tenant_id AND c.code = lower(r.partner)
       WHERE r.tenant_id = :t AND r.day BETWEEN :start AND :end AND r.touch = :touch
       GROUP BY c.partner_id, r.currency"""
)


def partners_report(
    session: Session, *, start: date, end: date, touch: str = "first", program_id: UUID | None = None
) -> PartnersReport:
    """Every partner (of ``program_id``, or all) with its totals from ``start`` to ``end`` (UTC days, inclusive);
    money by the partner code of the buyer's ``touch`` (``first`` or ``last``). Most clicks first."""
    errors: dict[str, str] = {}
    if end < start:
        errors["end"] = "must be on or after the start"
    elif (end - start).days >= MAX_REPORT_DAYS:
        errors["end"] = f"the range is at most {MAX_REPORT_DAYS} days"
    if touch not in TOUCHES:
        errors["touch"] = "must be first or last"
    if errors:
        raise Invalid("the report's range is invalid", errors)
    params: dict[str, Any] = {"t": current_tenant_id(session), "start": start, "end": end, "touch": touch}
    with report_timeout(session):
        partners = {
            row[0]: PartnerTotals(row[0], row[1], row[2])
            for row in session.execute(_PARTNERS, {**params, "program": program_id})
        }
        sub_ids = []
        for partner_id, sid, clicks, leads in session.execute(_REFERRALS, params):
            if partner_id not in partners:
                continue
            totals = partners[partner_id]
            totals.clicks += int(clicks)
            totals.leads += int(leads)
            sub_ids.append(SubIdTotals(partner_id, totals.email, sid, int(clicks), int(leads)))
        revenue: dict[UUID, dict[str, int]] = defaultdict(dict)
        for partner_id, currency, purchases, customers, net in session.execute(_MONEY, params):
            if partner_id not in partners:
                continue
            partners[partner_id].purchases += int(purchases)
            partners[partner_id].customers += int(customers)
            revenue[partner_id][currency] = int(net)
    for partner_id, by_currency in revenue.items():
        partners[partner_id].revenue = dict(sorted(by_currency.items()))
    ranked = sorted(partners.values(), key=lambda p: (-p.clicks, -p.leads, p.email))
    sub_ids.sort(key=lambda s: (s.email, -s.clicks, s.sid))
    return PartnersReport(start, end, touch, ranked, sub_ids)
