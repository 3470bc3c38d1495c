"""Report answers as the API sends them (built from the service's dataclasses)."""

from __future__ import annotations

from datetime import date

import msgspec

from tenants.reports import service

__all__ = ["AttributionPublic", "LivePublic", "OverviewPublic"]


class TotalsPublic(msgspec.Struct):
    visitors: int = 0
    """Counted once per day: a visitor seen on three days of the range counts three times."""
    new_visitors: int = 0
    visits: int = 0
    """Entries: hits that start a session (a visitor's first, or more than 30 minutes after its previous)."""
    pageviews: int = 0
    new_contacts: int = 0
    conversion_rate: float | None = None
    """New contacts per new visitor."""
    purchases: int = 0
    revenue: int = 0
    """Net of refunds, in minor units of the overview's ``currency``."""
    new_customers: int = 0
    """Contacts whose first purchase falls in the range."""
    cookieless_visitors: int = 0
    """Of ``visitors``, those counted without a cookie: browsers on opt-in sites before consent, per day only (one
    seen on two days counts twice); they are in ``visits`` and ``pageviews`` too, never in ``new_visitors``."""

    @classmethod
    def of(cls, totals: service.Totals) -> TotalsPublic:
        return cls(
            visitors=totals.visitors,
            new_visitors=totals.new_visitors,
            visits=totals.entries,
            pageviews=totals.pageviews,
            new_contacts=totals.new_contacts,
            conversion_rate=totals.conversion_rate,
            purchases=totals.purchases,
            revenue=totals.revenue,
            new_customers=totals.new_customers,
            cookieless_visitors=totals.cookieless_visitors,
        )


class SeriesPointPublic(msgspec.Struct):
    day: date
    visitors: int
    new_visitors: int
    visits: int
    pageviews: int
    new_contacts: int
    revenue: int


class BreakdownRowPublic(msgspec.Struct):
    value: str
    visitors: int
    visits: int
    new_visitors: int
    new_contacts: int
    previous_visits: int | None


class OverviewPublic(msgspec.Struct):
    start: date
    end: date
    totals: TotalsPublic
    previous: TotalsPublic | None
    series: list[SeriesPointPublic]
    breakdowns: dict[str, list[BreakdownRowPublic]]
    """The top 25 values of each dimension under the filters."""
    currency: str | None
    """The currency of every revenue number (the query's, else the one with most revenue in the range);
    null when the range has no purchases."""

    @classmethod
    def of(cls, overview: service.Overview) -> OverviewPublic:
        return cls(
            start=overview.query.start,
            end=overview.query.end,
            totals=TotalsPublic.of(overview.totals),
            previous=TotalsPublic.of(overview.previous) if overview.previous else None,
            series=[
                SeriesPointPublic(p.day, p.visitors, p.new_visitors, p.entries, p.pageviews, p.new_contacts, p.revenue)
                for p in overview.series
            ],
            breakdowns={
                name: [
                    BreakdownRowPublic(
                        r.value, r.visitors, r.entries, r.new_visitors, r.new_contacts, r.previous_entries
                    )
                    for r in rows
                ]
                for name, rows in overview.breakdowns.items()
            },
            currency=overview.currency,
        )


class AttributionRowPublic(msgspec.Struct):
    group: dict[str, str]
    visitors: int
    new_contacts: int
    conversion_rate: float | None
    median_days_to_contact: float | None
    revenue: int
    """Net of refunds, minor units of ``currency``, of purchases attributed by the same touch."""
    customers: int
    """New customers (first purchase in the range) attributed by the same touch."""
    revenue_per_visitor: float | None
    currency: str | None


class AttributionPublic(msgspec.Struct):
    model: str
    group_by: list[str]
    rows: list[AttributionRowPublic]

    @classmethod
    def of(cls, model: str, group_by: list[str], rows: list[service.AttributionRow]) -> AttributionPublic:
        return cls(
            model,
            group_by,
            [
                AttributionRowPublic(
                    r.group,
                    r.visitors,
                    r.new_contacts,
                    r.conversion_rate,
                    r.median_days_to_contact,
                    r.revenue,
                    r.customers,
                    r.revenue_per_visitor,
                    r.currency,
                )
                for r in rows
            ],
        )


class PageCount(msgspec.Struct):
    path: str
    pageviews: int


class LivePublic(msgspec.Struct):
    minutes: int
    visitors: int
    pageviews: int
    top_pages: list[PageCount]

    @classmethod
    def of(cls, minutes: int, panel: service.LivePanel) -> LivePublic:
        return cls(minutes, panel.visitors, panel.pageviews, [PageCount(p, n) for p, n in panel.top_pages])
