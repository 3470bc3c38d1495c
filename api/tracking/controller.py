"""Tenant API: sites (with their snippet), visitors and visits."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter

from api.fields import given_fields
from api.openapi import AUTH, BODY, creates, problems
from api.tracking.filters import ANY, visit_filter, visitor_filter
from api.tracking.schemas import (
    ConsentUpdate,
    SiteCreate,
    SitePublic,
    SiteUpdate,
    VisitorConsentPublic,
    VisitorDetail,
    VisitorPublic,
    VisitPublic,
)
from tenants.accounts.service import ApiCaller
from tenants.conversions import consent
from tenants.models import ConsentSource, Scope, Site
from tenants.settings import get_settings
from tenants.tracking import history, sites

__all__ = ["SitesController", "VisitorsController", "VisitsController"]

Limit = Annotated[int, Parameter(ge=1, le=history.MAX_PAGE, description="Page size")]
Cursor = Annotated[str | None, Parameter(description="`next_cursor` of the previous page")]
Bots = Annotated[
    Literal["true", "false", "any"] | None,
    Parameter(description=f"Only bots (true), only people (false), or both ({ANY}, as when absent)"),
]
TouchDimension = Annotated[
    str | None,
    Parameter(max_length=200, description="This value of the touch's dimension, as the attribution report names it"),
]
VisitDimension = Annotated[
    str | None, Parameter(max_length=200, description="This value of the visit's dimension, as the reports count it")
]


class VisitorPage(msgspec.Struct):
    items: list[VisitorPublic]
    next_cursor: str | None


class VisitPage(msgspec.Struct):
    items: list[VisitPublic]
    next_cursor: str | None


def _public(site: Site) -> SitePublic:
    return SitePublic.of(site, sites.snippet(get_settings().base_url, site))


class SitesController(Controller):
    path = "/api/v1/sites"
    tags = ["tracking"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Register a site",
        responses=problems(*AUTH, *BODY),
        operation_class=creates("site_id", "getSite", "updateSite", "removeSite"),
        response_description="The site with its snippet",
    )
    def create_site(self, caller: NamedDependency[ApiCaller], data: JSONBody[SiteCreate]) -> SitePublic:
        """The response's ``snippet`` is the one line to paste into the site's pages."""
        with caller.session(Scope.WRITE) as session:
            site = sites.create_site(
                session,
                name=data.name,
                allowed_origins=data.allowed_origins,
                honor_dnt=data.honor_dnt,
                truncate_ip=data.truncate_ip,
                partner_params=data.partner_params,
                bot_policy=data.bot_policy,
                ads_consent=data.ads_consent,
                consent_mode=data.consent_mode,
            )
            return _public(site)

    @get(sync_to_thread=True, summary="List sites", responses=problems(*AUTH))
    def list_sites(self, caller: NamedDependency[ApiCaller]) -> list[SitePublic]:
        """Every site of the tenant, with its snippet."""
        with caller.session(Scope.READ) as session:
            return [_public(site) for site in sites.list_sites(session)]

    @get("/{site_id:uuid}", sync_to_thread=True, summary="Get a site", responses=problems(*AUTH, 400, 404))
    def get_site(self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID]) -> SitePublic:
        with caller.session(Scope.READ) as session:
            return _public(sites.get_site(session, site_id))

    @patch("/{site_id:uuid}", sync_to_thread=True, summary="Change a site", responses=problems(*AUTH, *BODY, 404))
    def update_site(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], data: JSONBody[SiteUpdate]
    ) -> SitePublic:
        """Only what is given changes; collect sees the change at once."""
        with caller.session(Scope.WRITE) as session:
            site = sites.update_site(session, site_id, **given_fields(data))
            sites.forget_site(site.site_key)
            return _public(site)

    @delete(
        "/{site_id:uuid}",
        status_code=204,
        sync_to_thread=True,
        summary="Delete a site and its visits",
        responses=problems(*AUTH, 400, 404),
    )
    def remove_site(self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID]) -> None:
        """Its visitors and visits go with it (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            sites.delete_site(session, site_id)


class VisitorsController(Controller):
    path = "/api/v1/visitors"
    tags = ["tracking"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List visitors, newest first, filtered", responses=problems(*AUTH, 400, 422))
    def list_visitors(
        self,
        caller: NamedDependency[ApiCaller],
        request: Request[Any, Any, Any],
        site_id: Annotated[UUID | None, Parameter(description="Only this site's visitors")] = None,
        is_bot: Bots = None,
        identified: Annotated[
            bool | None, Parameter(description="Only visitors linked to a contact (true) or anonymous ones (false)")
        ] = None,
        touch: Annotated[
            Literal["first", "last"], Parameter(description="Which touch the dimension filters apply to")
        ] = "first",
        channel: TouchDimension = None,
        source: TouchDimension = None,
        medium: TouchDimension = None,
        campaign: TouchDimension = None,
        partner: TouchDimension = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> VisitorPage:
        """One page at a time, with the filters of the dashboard's visitors list (``channel`` … ``partner`` of
        the visitor's first or last touch, as the attribution report names them); 422 for a cursor this API did
        not return."""
        filters = visitor_filter(dict(request.query_params.items()))
        with caller.session(Scope.READ) as session:
            page = history.list_visitors(session, filters, cursor=cursor, limit=limit)
            return VisitorPage([VisitorPublic.of(v) for v in page.items], page.next_cursor)

    @get(
        "/{visitor_id:uuid}",
        sync_to_thread=True,
        summary="A visitor's attribution and visits",
        responses=problems(*AUTH, 400, 404),
    )
    def get_visitor(self, caller: NamedDependency[ApiCaller], visitor_id: FromPath[UUID]) -> VisitorDetail:
        """First- and last-touch attribution and the first 100 visits."""
        with caller.session(Scope.READ) as session:
            visitor = history.get_visitor(session, visitor_id)
            visits = [VisitPublic.of(v) for v in history.visits_of(session, visitor_id)]
            public = VisitorPublic.of(visitor)
            return VisitorDetail(**msgspec.structs.asdict(public), visits=visits)

    @get(
        "/{visitor_id:uuid}/consent",
        sync_to_thread=True,
        summary="A visitor's ad consent",
        responses=problems(*AUTH, 400, 404),
    )
    def get_visitor_consent(
        self, caller: NamedDependency[ApiCaller], visitor_id: FromPath[UUID]
    ) -> VisitorConsentPublic:
        """The browser's answer and when it changed, and a GPC or DNT signal it sent."""
        with caller.session(Scope.READ) as session:
            history.get_visitor(session, visitor_id)
            return VisitorConsentPublic.of(visitor_id, consent.consent_of(session, visitor_id))

    @put(
        "/{visitor_id:uuid}/consent",
        sync_to_thread=True,
        summary="Store a visitor's ad consent",
        responses=problems(*AUTH, *BODY, 404),
    )
    def set_visitor_consent(
        self, caller: NamedDependency[ApiCaller], visitor_id: FromPath[UUID], data: JSONBody[ConsentUpdate]
    ) -> VisitorConsentPublic:
        """As the tracker's ``trailmark('consent', {ads})`` does: conversions of this browser reach ad platforms
        only with consent where the site asks for it (``ads_consent: opt_in``), and never after a refusal."""
        with caller.session(Scope.WRITE) as session:
            history.get_visitor(session, visitor_id)
            stored = consent.set_ads_consent(session, visitor_id, data.ads, ConsentSource.API)
            return VisitorConsentPublic.of(visitor_id, stored)


class VisitsController(Controller):
    path = "/api/v1/visits"
    tags = ["tracking"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List visits, newest first, filtered", responses=problems(*AUTH, 400, 422))
    def list_visits(
        self,
        caller: NamedDependency[ApiCaller],
        request: Request[Any, Any, Any],
        since: Annotated[datetime | None, Parameter(description="At or after this time")] = None,
        until: Annotated[datetime | None, Parameter(description="Before this time")] = None,
        from_day: Annotated[date | None, QueryParameter(name="from", description="On or after this UTC day")] = None,
        to_day: Annotated[date | None, QueryParameter(name="to", description="On or before this UTC day")] = None,
        site_id: Annotated[UUID | None, Parameter(description="Only this site's visits")] = None,
        visitor_id: Annotated[UUID | None, Parameter(description="Only this visitor's visits")] = None,
        utm_source: Annotated[str | None, Parameter(description="Exactly this utm_source")] = None,
        utm_medium: Annotated[str | None, Parameter(description="Exactly this utm_medium")] = None,
        utm_campaign: Annotated[str | None, Parameter(description="Exactly this utm_campaign")] = None,
        channel: VisitDimension = None,
        source: VisitDimension = None,
        medium: VisitDimension = None,
        campaign: VisitDimension = None,
        partner: VisitDimension = None,
        bot: Bots = None,
        type: Annotated[
            Literal["pageview", "event"] | None, Parameter(description="Page views or tracked events")
        ] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> VisitPage:
        """One page at a time, with the filters of the dashboard's visit log (``channel`` … ``partner`` of the
        visit itself, as the reports count it); 422 for a cursor this API did not return."""
        filters = visit_filter(dict(request.query_params.items()))
        with caller.session(Scope.READ) as session:
            page = history.list_visits(session, filters, cursor=cursor, limit=limit)
            return VisitPage([VisitPublic.of(v) for v in page.items], page.next_cursor)
