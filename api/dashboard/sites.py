"""Manage: Sites: the sites that carry the tracker, their settings, the snippet, and the first-hit check."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, changed_fields, lines, parsed, shown_again
from api.dashboard.rendering import redirect, screen
from api.tracking.schemas import SiteCreate, SiteUpdate
from api.web.csrf import checked_form
from tenants.models import DEFAULT_PARTNER_PARAMS, Site, UserRole
from tenants.settings import get_settings
from tenants.tracking import sites

__all__ = ["SitesController"]

SITE_SETTINGS = (
    "name",
    "allowed_origins",
    "honor_dnt",
    "truncate_ip",
    "partner_params",
    "bot_policy",
    "ads_consent",
    "consent_mode",
)


def _site_values(form: dict[str, str]) -> dict[str, Any]:
    return {
        "name": form.get("name", ""),
        "allowed_origins": lines(form.get("allowed_origins", "")),
        "honor_dnt": form.get("honor_dnt") == "on",
        "truncate_ip": form.get("truncate_ip") == "on",
        "partner_params": lines(form.get("partner_params", "").replace(",", "\n")),
        "bot_policy": form.get("bot_policy", "flag"),
        "ads_consent": form.get("ads_consent", "opt_out"),
        "consent_mode": form.get("consent_mode", "none"),
    }


NEW_SITE: dict[str, Any] = {
    "name": "",
    "allowed_origins": [],
    "honor_dnt": True,
    "truncate_ip": True,
    "partner_params": list(DEFAULT_PARTNER_PARAMS),
    "bot_policy": "flag",
    "ads_consent": "opt_out",
    "consent_mode": "none",
}
"""A new site's form before anything is typed."""


def _settings_of(site: Site) -> dict[str, Any]:
    return {name: getattr(site, name) for name in SITE_SETTINGS}


class SitesController(Controller):
    path = "/app/sites"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_sites(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        def read() -> list[Site]:
            with staff.session() as session:
                return sites.list_sites(session)

        return screen(
            request,
            staff,
            "dashboard/sites/list.html",
            section="sites",
            title="Sites",
            sites=await anyio.to_thread.run_sync(read),
            can_edit=staff.can(UserRole.EDITOR),
        )

    async def _editor(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        site_id: UUID | None,
        values: dict[str, Any] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The site's settings form (a new site's when ``site_id`` is None): first shown with the saved values, or
        again after a refusal with what was typed and why."""

        def read() -> tuple[Site | None, datetime | None]:
            if site_id is None:
                return None, None
            with staff.session() as session:
                return sites.get_site(session, site_id), sites.first_visit_at(session, site_id)

        site, first_hit_at = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/sites/edit.html",
            section="sites",
            title=site.name if site else "New site",
            status=refusal.status,
            site=site,
            values=values or (_settings_of(site) if site else NEW_SITE),
            snippet=sites.snippet(get_settings().base_url, site) if site else "",
            first_hit_at=first_hit_at,
            can_edit=staff.can(UserRole.EDITOR),
            refusal=refusal,
        )

    @get("/new", guards=[requires(UserRole.EDITOR)])
    async def new_site(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._editor(request, staff, None)

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_site(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        values = _site_values(await checked_form(request))

        def create() -> UUID:
            data = parsed("site", values, SiteCreate)
            with staff.session() as session:
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
                staff.audit(session, "site.create", f"site:{site.id}", fields=list(SITE_SETTINGS))
                return site.id

        async with shown_again(lambda refusal: self._editor(request, staff, None, values, refusal)):
            site_id = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/sites/{site_id}", "Site created: paste its snippet into your pages")

    @get("/{site_id:uuid}")
    async def show_site(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Template:
        return await self._editor(request, staff, site_id)

    @post("/{site_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def update_site(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Redirect:
        values = _site_values(await checked_form(request))

        def update() -> None:
            data = parsed("site", values, SiteUpdate)
            with staff.session() as session:
                before = _settings_of(sites.get_site(session, site_id))
                site = sites.update_site(session, site_id, **{name: getattr(data, name) for name in SITE_SETTINGS})
                changed = changed_fields(before, _settings_of(site))
                if changed:
                    staff.audit(session, "site.update", f"site:{site.id}", fields=changed)
                sites.forget_site(site.site_key)

        async with shown_again(lambda refusal: self._editor(request, staff, site_id, values, refusal)):
            await anyio.to_thread.run_sync(update)
        return redirect(f"/app/sites/{site_id}", "Site saved")

    @get("/{site_id:uuid}/first-hit")
    async def first_hit(self, staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]) -> Response[dict[str, Any]]:
        """Polled by the site page's script until the snippet's first visit is stored."""

        def read() -> dict[str, Any]:
            with staff.session() as session:
                seen = sites.first_visit_at(session, site_id)
                return {"received": seen is not None, "at": seen.isoformat() if seen else None}

        return Response(await anyio.to_thread.run_sync(read), headers={"Cache-Control": "no-store"})
