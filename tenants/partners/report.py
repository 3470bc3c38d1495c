"""The partners report: clicks, leads, purchases, customers, revenue and commissions per partner, per SubID and per
day, over a range of UTC days, read from rollups only (never from the raw clicks, purchases or commissions), so a
year answers as fast as a day. The dashboard, the portal (in the partner's own session) and any other reader call
:func:`partners_report`.

- clicks and leads: ``referral_rollups`` (migration 0014), kept by triggers in the transaction that writes
  ``referral_clicks`` and ``contact_referrers``; a lead is a new contact the partner referred (its first
  referrer binding), counted on the day it was bound, under the SubID of the click that bound it;
- purchases, customers, revenue and commissions: ``partner_sale_rollups`` (migration 0017), kept by triggers on
  ``purchase_credits``, ``commissions`` and ``purchases``. Money belongs to the partner a purchase credited, on the
  purchase's day, under the SubID of the click that credited it. A customer is a buyer's first credited purchase
  with the partner; revenue is net of refunds, tax included; commission is level 1 net of refunds (reversed lines
  count 0, refund adjustments negative, rejected lines nothing); sub-partner commission is level 2, under no SubID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session

from tenants.errors import Invalid
from tenants.isolation import current_tenant_id
from tenants.reports.service import report_timeout

__all__ = [
    "DEFAULT_DAYS",
    "MAX_REPORT_DAYS",
    "DayTotals",
    "PartnerTotals",
    "PartnersReport",
    "SubIdTotals",
    "Totals",
    "check_range",
    "partners_report",
    "report_range",
]

MAX_REPORT_DAYS = 731
DEFAULT_DAYS = 30


def _add_money(into: dict[str, int], currency: str, amount: int) -> None:
    if amount:
        into[currency] = into.get(currency, 0) + amount


@dataclass(kw_only=True)
class Totals:
    """What a row of the report counts; money in minor units per currency."""

    clicks: int = 0
    leads: int = 0
    purchases: int = 0
    customers: int = 0
    revenue: dict[str, int] = field(default_factory=dict)
    """Net of refunds, tax included."""
    commission: dict[str, int] = field(default_factory=dict)
    """Level 1, net of refunds."""
    sub_partner_commission: dict[str, int] = field(default_factory=dict)
    """Level 2: earned on the sales of partners this one recruited."""

    def _add_referrals(self, clicks: int, leads: int) -> None:
        self.clicks += clicks
        self.leads += leads

    def _add_sales(self, currency: str, sums: tuple[int, int, int, int, int]) -> None:
        purchases, customers, revenue, commission, sub_partner = sums
        self.purchases += purchases
        self.customers += customers
        _add_money(self.revenue, currency, revenue)
        _add_money(self.commission, currency, commission)
        _add_money(self.sub_partner_commission, currency, sub_partner)

    def _merge(self, other: Totals) -> None:
        self._add_referrals(other.clicks, other.leads)
        self.purchases += other.purchases
        self.customers += other.customers
        for name in ("revenue", "commission", "sub_partner_commission"):
            for currency, amount in getattr(other, name).items():
                _add_money(getattr(self, name), currency, amount)

    def _sort_money(self) -> None:
        for name in ("revenue", "commission", "sub_partner_commission"):
            setattr(self, name, dict(sorted(getattr(self, name).items())))

    @property
    def empty(self) -> bool:
        """Nothing counted (a SubID or day row the report leaves out)."""
        money = self.revenue or self.commission or self.sub_partner_commission
        return not (self.clicks or self.leads or self.purchases or money)


@dataclass(kw_only=True)
class PartnerTotals(Totals):
    partner_id: UUID
    email: str
    status: str


@dataclass(kw_only=True)
class SubIdTotals(Totals):
    partner_id: UUID
    email: str
    sid: str
    """``""`` for clicks and sales without a SubID (and level-2 commissions)."""


@dataclass(kw_only=True)
class DayTotals(Totals):
    day: date


@dataclass(frozen=True)
class PartnersReport:
    start: date
    end: date
    partners: list[PartnerTotals]
    """Every partner in scope, most clicks first (those without activity too)."""
    sub_ids: list[SubIdTotals]
    """Per partner and SubID with any activity in the range."""
    days: list[DayTotals]
    """The partners' totals per UTC day with any activity, newest first."""
    total: Totals


_PARTNERS = text(
    """SELECT p.id, c.email, p.status
       FROM partners p JOIN contacts c ON c.tenant_id = p.tenant_id AND c.id = p.contact_id
       WHERE p.tenant_id = :t AND (CAST(:program AS uuid) IS NULL OR p.program_id = CAST(:program AS uuid))
         AND (CAST(:partner AS uuid) IS NULL OR p.id = CAST(:partner AS uuid))
       ORDER BY c.email"""
)
# One read per rollup, summed both ways at once: per (partner, SubID) and per (day, partner); GROUPING(day) tells
# the rows apart.
_REFERRALS = text(
    """SELECT GROUPING(day), day, partner_id, sid, sum(clicks)::bigint, sum(leads)::bigint FROM referral_rollups
       WHERE tenant_id = :t AND day BETWEEN :start AND :end
         AND (CAST(:partner AS uuid) IS NULL OR partner_id = CAST(:partner AS uuid))
       GROUP BY GROUPING SETS ((partner_id, sid), (day, partner_id))"""
)
_SALES = text(
    """SELECT GROUPING(day), day, partner_id, sid, currency, sum(purchases)::bigint, sum(customers)::bigint,
              sum(revenue)::bigint, sum(commission)::bigint, sum(sub_partner_commission)::bigint
       FROM partner_sale_rollups
       WHERE tenant_id = :t AND day BETWEEN :start AND :end
         AND (CAST(:partner AS uuid) IS NULL OR partner_id = CAST(:partner AS uuid))
       GROUP BY GROUPING SETS ((partner_id, sid, currency), (day, partner_id, currency))"""
)


def report_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """The range a reader typed (``YYYY-MM-DD``, either may be blank): by default the :data:`DEFAULT_DAYS` days
    up to ``end`` or today. Refused with a reason per field (422)."""
    errors: dict[str, str] = {}
    parsed: dict[str, date | None] = {}
    for name, value in (("start", start), ("end", end)):
        try:
            parsed[name] = date.fromisoformat(value.strip()) if value and value.strip() else None
        except ValueError:
            errors[name] = "must be a date, YYYY-MM-DD"
    if errors:
        raise Invalid("the report's range is invalid", errors)
    last = parsed["end"] or today
    try:
        first = parsed["start"] or last - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # an end in the first days of year 1
        raise Invalid("the report's range is invalid", {"end": "is too early"}) from None
    check_range(first, last)
    return first, last


def check_range(start: date, end: date) -> None:
    """The report's range refused with a reason per field (422), as every reader shows it."""
    if end < start:
        raise Invalid("the report's range is invalid", {"end": "must be on or after the start"})
    if (end - start).days >= MAX_REPORT_DAYS:
        raise Invalid("the report's range is invalid", {"end": f"the range is at most {MAX_REPORT_DAYS} days"})


def partners_report(
    session: Session,
    *,
    start: date,
    end: date,
    program_id: UUID | None = None,
    partner_id: UUID | None = None,
) -> PartnersReport:
    """Every partner (of ``program_id``, or only ``partner_id``, or all) with its totals from ``start`` to ``end``
    (UTC days, inclusive), per SubID and per day. In a portal session the partner scope shows only its own rows."""
    check_range(start, end)
    params: dict[str, Any] = {
        "t": current_tenant_id(session), "start": start, "end": end, "program": program_id, "partner": partner_id,
    }  # fmt: skip
    with report_timeout(session):
        partners = {
            row[0]: PartnerTotals(partner_id=row[0], email=row[1], status=row[2])
            for row in session.execute(_PARTNERS, params)
        }
        sub_ids: dict[tuple[UUID, str], SubIdTotals] = {}
        days: dict[date, DayTotals] = {}

        def sub_id(partner: UUID, sid: str) -> SubIdTotals:
            key = (partner, sid)
            if key not in sub_ids:
                sub_ids[key] = SubIdTotals(partner_id=partner, email=partners[partner].email, sid=sid)
            return sub_ids[key]

        def on_day(day: date) -> DayTotals:
            return days.setdefault(day, DayTotals(day=day))

        for by_partner, day, partner, sid, clicks, leads in session.execute(_REFERRALS, params):
            if partner not in partners:
                continue
            if by_partner:
                partners[partner]._add_referrals(int(clicks), int(leads))
                sub_id(partner, sid)._add_referrals(int(clicks), int(leads))
            else:
                on_day(day)._add_referrals(int(clicks), int(leads))
        for by_partner, day, partner, sid, currency, *sums in session.execute(_SALES, params):
            if partner not in partners:
                continue
            measures = (int(sums[0]), int(sums[1]), int(sums[2]), int(sums[3]), int(sums[4]))
            if by_partner:
                partners[partner]._add_sales(currency, measures)
                sub_id(partner, sid)._add_sales(currency, measures)
            else:
                on_day(day)._add_sales(currency, measures)
    total = Totals()
    for day_totals in days.values():  # each day counts the partners in scope once
        total._merge(day_totals)
    rows: list[Totals] = [total, *partners.values(), *sub_ids.values(), *days.values()]
    for row in rows:
        row._sort_money()
    ranked = sorted(partners.values(), key=lambda p: (-p.clicks, -p.leads, -p.purchases, p.email))
    listed = sorted((s for s in sub_ids.values() if not s.empty), key=lambda s: (s.email, -s.clicks, s.sid))
    dated = sorted((d for d in days.values() if not d.empty), key=lambda d: d.day, reverse=True)
    return PartnersReport(start, end, ranked, listed, dated, total)
