"""The Visitors screens: the visitors list (by site, identified or anonymous, first or last touch; bots only
when asked), the visit log, and a visitor's page with its touches, its contact and its visits."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, get
from litestar.response import Template

from api.contacts.filters import touch_filter
from api.dashboard.auth import StaffCaller, requires
from api.dashboard.rendering import screen
from tenants.contacts import service as contacts
from tenants.errors import Invalid
from tenants.models import UserRole
from tenants.tracking import history, sites
from tenants.tracking.segments import FILTERED_DIMENSIONS

__all__ = ["VisitorsController", "VisitsController"]


def _params(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if v.strip()}


def _site(params: dict[str, str]) -> UUID | None:
    if "site" not in params:
        return None
    try:
        return UUID(params["site"])
    except ValueError:
        raise Invalid("the site is unknown", {"site": "must be one of the tenant's sites"}) from None


def _day(params: dict[str, str], name: str, *, end: bool = False) -> datetime | None:
    if name not in params:
        return None
    try:
        day = datetime.fromisoformat(params[name]).date()
    except ValueError:
        raise Invalid("the date is invalid", {name: "must be a date like 2026-11-26"}) from None
    return datetime.combine(day + timedelta(days=1) if end else day, time.min, tzinfo=UTC)


def _paging_query(params: dict[str, str]) -> str:
    return urlencode({k: v for k, v in params.items() if k != "cursor"})


class VisitorsController(Controller):
    path = "/app/visitors"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def visitor_list(self, request: Request[Any, Any, Any], staff: StaffCaller) -> Template:
        params = _params(request)
        identified = {"identified": True, "anonymous": False}.get(params.get("who", ""))
        with staff.session() as session:
            page = history.list_visitors(
                session,
                site_id=_site(params),
                is_bot=None if params.get("bots") == "1" else False,
                identified=identified,
                touch=touch_filter(params),
                cursor=params.get("cursor"),
            )
            site_list = sites.list_sites(session)
        return screen(
            request,
            staff,
            "dashboard/visitors/list.html",
            section="visitors",
            title="Visitors",
            page=page,
            params=params,
            sites=site_list,
            dimensions=FILTERED_DIMENSIONS,
            query=_paging_query(params),
        )

    @get("/{visitor_id:uuid}", sync_to_thread=True)
    def visitor_page(self, request: Request[Any, Any, Any], staff: StaffCaller, visitor_id: UUID) -> Template:
        params = _params(request)
        with staff.session() as session:
            visitor = history.get_visitor(session, visitor_id)
            visits = history.visitor_visits(session, visitor_id, cursor=params.get("cursor"))
            contact = contacts.get_contact(session, visitor.contact_id) if visitor.contact_id else None
        return screen(
            request,
            staff,
            "dashboard/visitors/visitor.html",
            section="visitors",
            title=f"Visitor {str(visitor.id)[:8]}",
            visitor=visitor,
            visits=visits,
            contact=contact,
        )


class VisitsController(Controller):
    path = "/app/visits"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def visit_log(self, request: Request[Any, Any, Any], staff: StaffCaller) -> Template:
        params = _params(request)
        filters = history.VisitFilter(
            since=_day(params, "from"),
            until=_day(params, "to", end=True),
            site_id=_site(params),
            is_bot=None if params.get("bots") == "1" else False,
            dimensions={name: params[name] for name in FILTERED_DIMENSIONS if name in params},
        )
        with staff.session() as session:
            page = history.list_visits(session, filters, cursor=params.get("cursor"))
            site_list = sites.list_sites(session)
        return screen(
            request,
            staff,
            "dashboard/visitors/visits.html",
            section="visitors",
            title="Visits",
            page=page,
            params=params,
            sites=site_list,
            dimensions=FILTERED_DIMENSIONS,
            query=_paging_query(params),
        )
