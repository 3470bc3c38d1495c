"""Manage: Memberships: membership sites (registration, landing page) and their members — invite one,
send an invitation again, disable one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlmodel import col, select

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import changed_fields, parsed
from api.dashboard.rendering import redirect, screen
from api.pages.controller import MemberCreate, MembershipSiteCreate, MembershipSiteUpdate
from api.web.csrf import checked_form
from tenants.accounts.service import get_tenant
from tenants.memberships import service as memberships
from tenants.models import Contact, MembershipSite, UserRole
from tenants.pages.service import list_pages
from tenants.settings import get_settings

__all__ = ["MembershipsController"]

SITE_SETTINGS = ("name", "registration", "landing_page_slug")


def _site_values(form: dict[str, str]) -> dict[str, Any]:
    return {
        "name": form.get("name", ""),
        "registration": form.get("registration", "invite"),
        "landing_page_slug": form.get("landing_page_slug", ""),
    }


def _settings_of(site: MembershipSite) -> dict[str, Any]:
    return {name: getattr(site, name) for name in SITE_SETTINGS}


def _status(has_password: bool, disabled: bool) -> str:
    return "disabled" if disabled else "active" if has_password else "invited"


class MembershipsController(Controller):
    path = "/app/memberships"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_sites(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        def read() -> list[MembershipSite]:
            with staff.session() as session:
                return memberships.list_membership_sites(session)

        return screen(
            request,
            staff,
            "dashboard/memberships/list.html",
            section="memberships",
            title="Membership sites",
            sites=await anyio.to_thread.run_sync(read),
            can_edit=staff.can(UserRole.EDITOR),
        )

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_site(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        values = _site_values(await checked_form(request))
        data = parsed(
            "membership site",
            {**values, "landing_page_slug": values["landing_page_slug"] or None},
            MembershipSiteCreate,
        )

        def create() -> UUID:
            with staff.session() as session:
                site = memberships.create_membership_site(
                    session, name=data.name, registration=data.registration, landing_page_slug=data.landing_page_slug
                )
                staff.audit(session, "membership_site.create", f"membership_site:{site.id}", fields=list(SITE_SETTINGS))
                return site.id

        return redirect(f"/app/memberships/{await anyio.to_thread.run_sync(create)}", "Membership site created")

    @get("/{site_id:uuid}")
    async def show_site(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Template:
        def read() -> dict[str, Any]:
            with staff.session() as session:
                site = memberships.get_membership_site(session, site_id)
                members = memberships.list_members(session, site_id)
                contact_ids = [member.contact_id for member in members]
                of_members = select(Contact).where(col(Contact.id).in_(contact_ids))
                emails = {contact.id: contact.email for contact in session.exec(of_members)} if contact_ids else {}
                rows = [
                    {
                        "id": m.id,
                        "email": emails.get(m.contact_id, ""),
                        "created_at": m.created_at,
                        "last_login_at": m.last_login_at,
                        "status": _status(m.password_hash is not None, m.disabled),
                    }
                    for m in members
                ]
                slug = get_tenant(session).slug
                return {
                    "site": site,
                    "members": rows,
                    "pages": list_pages(session),
                    "login_url": f"{get_settings().base_url}/s/{slug}/m/{site.id}/login",
                }

        found = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/memberships/site.html",
            section="memberships",
            title=found["site"].name,
            can_edit=staff.can(UserRole.EDITOR),
            **found,
        )

    @post("/{site_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def update_site(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Redirect:
        data = parsed("membership site", _site_values(await checked_form(request)), MembershipSiteUpdate)

        def update() -> None:
            with staff.session() as session:
                before = _settings_of(memberships.get_membership_site(session, site_id))
                site = memberships.update_membership_site(
                    session,
                    site_id,
                    name=str(data.name),
                    registration=str(data.registration),
                    landing_page_slug=str(data.landing_page_slug),
                )
                if changed := changed_fields(before, _settings_of(site)):
                    staff.audit(session, "membership_site.update", f"membership_site:{site.id}", fields=changed)

        await anyio.to_thread.run_sync(update)
        return redirect(f"/app/memberships/{site_id}", "Membership site saved")

    @post("/{site_id:uuid}/members", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def invite_member(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)
        data = parsed(
            "member",
            {
                "email": form.get("email", "").strip(),
                "first_name": form.get("first_name", "").strip() or None,
                "last_name": form.get("last_name", "").strip() or None,
            },
            MemberCreate,
        )

        def invite() -> None:
            with staff.session() as session:
                member = memberships.create_member(
                    session, site_id=site_id, email=data.email, first_name=data.first_name, last_name=data.last_name
                )
                given = [name for name in ("email", "first_name", "last_name") if getattr(data, name)]
                staff.audit(session, "member.invite", f"member:{member.id}", fields=given)

        await anyio.to_thread.run_sync(invite)
        return redirect(f"/app/memberships/{site_id}", f"Invitation sent to {data.email}")

    @post("/{site_id:uuid}/members/{member_id:uuid}/invitation", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def resend_invitation(
        self, staff: NamedDependency[StaffCaller], site_id: FromPath[UUID], member_id: FromPath[UUID]
    ) -> Redirect:
        def resend() -> None:
            with staff.session() as session:
                member = memberships.resend_invitation(session, site_id, member_id)
                staff.audit(session, "member.reinvite", f"member:{member.id}")

        await anyio.to_thread.run_sync(resend)
        return redirect(f"/app/memberships/{site_id}", "Invitation sent again")

    @post("/{site_id:uuid}/members/{member_id:uuid}/disable", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def disable_member(
        self, staff: NamedDependency[StaffCaller], site_id: FromPath[UUID], member_id: FromPath[UUID]
    ) -> Redirect:
        def disable() -> None:
            with staff.session() as session:
                member = memberships.disable_member(session, site_id, member_id)
                staff.audit(session, "member.disable", f"member:{member.id}", fields=["disabled"])

        await anyio.to_thread.run_sync(disable)
        return redirect(f"/app/memberships/{site_id}", "Member disabled")
