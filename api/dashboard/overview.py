"""The overview: cards, the time series, breakdown tables that filter the whole page, and the live panel.

The numbers come from the report service (rollups), the same one the REST API reads. A panel whose query hits the
report statement timeout says so; the rest of the page still renders.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.rendering import screen
from api.dashboard.report_view import (
    DIMENSION_LABELS,
    PRESETS,
    ReportView,
    change,
    change_in_points,
    read_report_view,
)
from api.web.charts import SeriesPoint, format_number, inline_bar, time_series
from tenants.errors import ReportTimedOut
from tenants.models import UserRole
from tenants.purchases.currencies import format_money, minor_unit_digits
from tenants.reports.dimensions import DIMENSIONS
from tenants.reports.service import LivePanel, Overview, live, overview

__all__ = ["OverviewController"]

BREAKDOWN_ROWS = 10
"""Rows shown per breakdown table (Plausible shows nine); the service returns its top rows."""
LIVE_MINUTES = 30


def _cards(report: Overview, view: ReportView) -> list[dict[str, Any]]:
    totals, before = report.totals, report.previous if view.compare else None
    return [
        {
            "label": "Visitors",
            "value": format_number(totals.visitors),
            "change": change(totals.visitors, before.visitors if before else None),
            "note": "unique visitors per day, summed over the range"
            + (
                f"; {format_number(totals.cookieless_visitors)} counted without cookies before consent"
                if totals.cookieless_visitors
                else ""
            ),
        },
        {
            "label": "New visitors",
            "value": format_number(totals.new_visitors),
            "change": change(totals.new_visitors, before.new_visitors if before else None),
            "note": "first seen in this range",
        },
        {
            "label": "Visits",
            "value": format_number(totals.entries),
            "change": change(totals.entries, before.entries if before else None),
            "note": f"{format_number(totals.pageviews)} pageviews",
        },
        {
            "label": "New contacts",
            "value": format_number(totals.new_contacts),
            "change": change(totals.new_contacts, before.new_contacts if before else None),
            "note": "identified in this range",
        },
        {
            "label": "Conversion rate",
            "value": "—" if totals.conversion_rate is None else f"{totals.conversion_rate * 100:.1f}%",
            "change": change_in_points(totals.conversion_rate, before.conversion_rate if before else None),
            "note": "new contacts ÷ new visitors",
        },
        *(
            [
                {
                    "label": "Revenue",
                    "value": format_money(totals.revenue, report.currency),
                    "change": change(totals.revenue, before.revenue if before else None),
                    "note": f"{format_number(totals.purchases)} purchases, net of refunds",
                },
                {
                    "label": "New customers",
                    "value": format_number(totals.new_customers),
                    "change": change(totals.new_customers, before.new_customers if before else None),
                    "note": "first purchase in this range",
                },
            ]
            if report.currency
            else []
        ),
    ]


def _chart(report: Overview) -> Any:
    previous = [point.visitors for point in report.previous_series or []]
    points = [
        SeriesPoint(
            label=point.day.strftime("%-d %b"),
            value=point.visitors,
            previous=previous[i] if i < len(previous) else None,
        )
        for i, point in enumerate(report.series)
    ]
    return time_series("visitors-chart", "Visitors per day", points, value_name="Visitors")


def _revenue_chart(report: Overview) -> Any:
    """Revenue per day in whole units of the report's currency; None without purchases in the range."""
    if report.currency is None:
        return None
    unit = 10 ** minor_unit_digits(report.currency)
    previous = [point.revenue for point in report.previous_series or []]
    points = [
        SeriesPoint(
            label=point.day.strftime("%-d %b"),
            value=round(point.revenue / unit),
            previous=round(previous[i] / unit) if i < len(previous) else None,
        )
        for i, point in enumerate(report.series)
    ]
    return time_series("revenue-chart", f"Revenue per day ({report.currency})", points, value_name="Revenue")


def _breakdowns(report: Overview, view: ReportView) -> list[dict[str, Any]]:
    tables = []
    for dimension in DIMENSIONS:
        rows = report.breakdowns.get(dimension, [])
        top = max((row.visitors for row in rows), default=0)
        tables.append(
            {
                "dimension": dimension,
                "heading": DIMENSION_LABELS[dimension][0],
                "column": DIMENSION_LABELS[dimension][1],
                "filtered": dimension in view.filters,
                "more": max(0, len(rows) - BREAKDOWN_ROWS),
                "rows": [
                    {
                        "value": row.value,
                        "link": view.with_filter(dimension, row.value),
                        "bar": inline_bar(row.visitors, top),
                        "visitors": format_number(row.visitors),
                        "entries": format_number(row.entries),
                        "new_contacts": format_number(row.new_contacts),
                        "change": change(row.entries, row.previous_entries) if view.compare else None,
                    }
                    for row in rows[:BREAKDOWN_ROWS]
                ],
            }
        )
    return tables


def _live(staff: StaffCaller, view: ReportView) -> tuple[LivePanel | None, bool]:
    try:
        with staff.session() as session:
            panel = live(session, view.site_id, LIVE_MINUTES, filters=view.filters, include_bots=view.include_bots)
            return panel, False
    except ReportTimedOut:
        return None, True


class OverviewController(Controller):
    path = "/app"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def overview(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        with staff.session() as session:
            view = read_report_view(session, "/app", request.query_params)
        report: Overview | None = None
        timed_out = False
        try:
            with staff.session() as session:
                report = overview(session, view.query)
        except ReportTimedOut:
            timed_out = True
        live_panel, live_timed_out = _live(staff, view)
        return screen(
            request,
            staff,
            "dashboard/overview/overview.html",
            section="overview",
            title="Overview",
            view=view,
            presets=PRESETS,
            timed_out=timed_out,
            cards=_cards(report, view) if report else [],
            cookieless_visitors=report.totals.cookieless_visitors if report else 0,
            chart=_chart(report) if report else None,
            revenue_chart=_revenue_chart(report) if report else None,
            currency=report.currency if report else None,
            breakdowns=_breakdowns(report, view) if report else [],
            live=live_panel,
            live_timed_out=live_timed_out,
            live_minutes=LIVE_MINUTES,
        )

    @get("/live", sync_to_thread=True)
    def live_fragment(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        """The live panel alone, for the page's script to refresh it in place."""
        with staff.session() as session:
            view = read_report_view(session, "/app", request.query_params)
        live_panel, live_timed_out = _live(staff, view)
        return screen(
            request,
            staff,
            "dashboard/overview/live.html",
            section="overview",
            title="Live",
            view=view,
            live=live_panel,
            live_timed_out=live_timed_out,
            live_minutes=LIVE_MINUTES,
        )
