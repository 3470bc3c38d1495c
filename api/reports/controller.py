"""Tenant API: the reports, read from the daily rollups through the same service as the dashboard."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter

from api.openapi import AUTH, problems
from api.reports.schemas import AttributionPublic, LivePublic, OverviewPublic
from tenants.accounts.service import ApiCaller
from tenants.models import Scope
from tenants.reports import service
from tenants.reports.dimensions import DIMENSIONS

__all__ = ["ReportsController"]

_ONE_DIMENSION = "|".join(DIMENSIONS)
DEFAULT_GROUP_BY = ",".join(service.DEFAULT_ATTRIBUTION_GROUPS)
Start = Annotated[date, Parameter(description="First day (UTC), inclusive; 2000-01-01 or later")]
End = Annotated[date, Parameter(description="Last day (UTC), inclusive; at most 400 days after start")]
SiteId = Annotated[UUID | None, Parameter(description="One site; all of the tenant's when absent")]
Bots = Annotated[bool, Parameter(description="Count hits flagged as bots too")]
Compare = Annotated[bool, Parameter(description="Also report the previous period of equal length")]
Currency = Annotated[
    str | None,
    Parameter(
        pattern="^[A-Z]{3}$",
        description="Revenue in this ISO 4217 currency; the one with the most revenue in the range when absent",
    ),
]
Dimension = Annotated[str | None, Parameter(max_length=200, description="Only rows with this value")]
GroupBy = Annotated[
    str,
    Parameter(
        max_length=200,
        pattern=f"^({_ONE_DIMENSION})(,({_ONE_DIMENSION}))*$",
        description=f"Comma-separated dimensions to group by, of: {', '.join(DIMENSIONS)}",
    ),
]


def dimension_filters(
    channel: Dimension = None,
    source: Dimension = None,
    medium: Dimension = None,
    campaign: Dimension = None,
    referrer: Dimension = None,
    landing_page: Dimension = None,
    partner: Dimension = None,
    click_platform: Dimension = None,
) -> dict[str, str]:
    """The query parameters that narrow every report to rows with these dimension values, declared once: a
    dependency of each report operation, so each documents and reads them alike."""
    given = {
        "channel": channel, "source": source, "medium": medium, "campaign": campaign, "referrer": referrer,
        "landing_page": landing_page, "partner": partner, "click_platform": click_platform,
    }  # fmt: skip
    assert set(given) == set(DIMENSIONS), "a dimension without its query parameter"
    return {name: value for name, value in given.items() if value is not None}


class ReportsController(Controller):
    path = "/api/v1/reports"
    tags = ["reports"]
    security = [{"apiKey": []}]
    dependencies = {"filters": Provide(dimension_filters, sync_to_thread=False)}

    @get(
        "/overview",
        sync_to_thread=True,
        summary="Overview: totals, daily series and breakdowns",
        responses=problems(*AUTH, 400, 404),
    )
    def overview(
        self,
        caller: NamedDependency[ApiCaller],
        filters: NamedDependency[dict[str, str]],
        start: Start,
        end: End,
        site_id: SiteId = None,
        include_bots: Bots = False,
        compare: Compare = True,
        currency: Currency = None,
    ) -> OverviewPublic:
        """Visitors are counted once per day; visits are entries (a session's first hit); new contacts are
        attributed by their first touch and are not narrowed by ``site_id``. 503 when the report times out."""
        query = service.ReportQuery(start, end, site_id, filters, include_bots, compare, currency)
        with caller.session(Scope.READ) as session:
            return OverviewPublic.of(service.overview(session, query))

    @get(
        "/attribution",
        sync_to_thread=True,
        summary="Attribution by first or last touch",
        responses=problems(*AUTH, 400, 404),
    )
    def attribution(
        self,
        caller: NamedDependency[ApiCaller],
        filters: NamedDependency[dict[str, str]],
        start: Start,
        end: End,
        site_id: SiteId = None,
        include_bots: Bots = False,
        model: Annotated[
            Literal["first", "last"], Parameter(description="Which touch a contact is credited to")
        ] = "first",
        group_by: GroupBy = DEFAULT_GROUP_BY,
        currency: Currency = None,
    ) -> AttributionPublic:
        """First touch: visitors are new visitors by their first hit. Last touch: visitors are visits
        (entries) with these dimensions. New contacts are those created in the range, by that touch."""
        query = service.ReportQuery(start, end, site_id, filters, include_bots, compare=False, currency=currency)
        groups = group_by.split(",")
        with caller.session(Scope.READ) as session:
            rows = service.attribution(session, query, model, groups)
        return AttributionPublic.of(model, [name for name in DIMENSIONS if name in groups], rows)

    @get("/live", sync_to_thread=True, summary="Visitors right now", responses=problems(*AUTH, 400, 404))
    def live(
        self,
        caller: NamedDependency[ApiCaller],
        filters: NamedDependency[dict[str, str]],
        site_id: SiteId = None,
        include_bots: Bots = False,
        minutes: Annotated[int, Parameter(ge=1, le=service.LIVE_MAX_MINUTES, description="Window")] = 30,
    ) -> LivePublic:
        """Visitors and page views of the last ``minutes`` and the top pages, under the same dimension filters
        as the overview (each visit's own dimensions)."""
        with caller.session(Scope.READ) as session:
            panel = service.live(session, site_id, minutes, filters=filters, include_bots=include_bots)
            return LivePublic.of(minutes, panel)
