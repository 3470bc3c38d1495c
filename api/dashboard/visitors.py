"""The Visitors screens: the visitors list (by site, identified or anonymous, first or last touch; bots only
when asked), the visit log, and a visitor's page with its touches, its contact and its visits.

The lists read their filters with the REST API's own parser (``api.tracking.filters``), under the same names,
so a filtered list's address works on ``/api/v1/visitors`` and ``/api/v1/visits`` too; only the default differs:
the screens leave bots out until asked."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.rendering import screen
from api.tracking.filters import visit_filter, visitor_filter
from tenants.contacts import service as contacts
from tenants.models import UserRole
from tenants.tracking import history, sites
from tenants.tracking.segments import FILTERED_DIMENSIONS

__all__ = ["VisitorsController", "VisitsController"]


def _params(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if v.strip()}


def _paging_query(params: dict[str, str]) -> str:
    return urlencode({k: v for k, v in params.items() if k != "cursor"})


class VisitorsController(Controller):
    path = "/app/visitors"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def visitor_list(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        params = _params(request)
        filters = visitor_filter(params, bots=False)
        with staff.session() as session:
            page = history.list_visitors(session, filters, cursor=params.get("cursor"))
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
    def visitor_page(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], visitor_id: FromPath[UUID]
    ) -> Template:
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
    def visit_log(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        params = _params(request)
        filters = visit_filter(params, bots=False)
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
