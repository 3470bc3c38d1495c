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
from api.dashboard.manage_input import NO_REFUSAL, Refusal, changed_fields, parsed, shown_again
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


NEW_SITE = {"name": "", "registration": "invite", "landing_page_slug": ""}
"""A new membership site's form before anything is typed."""
NEW_MEMBER = {"email": "", "first_name": "", "last_name": ""}
"""The invitation form before anything is typed."""


def _status(has_password: bool, disabled: bool) -> str:
    return "disabled" if disabled else "active" if has_password else "invited"


class MembershipsController(Controller):
    path = "/app/memberships"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    async def _list(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        values: dict[str, str] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The membership sites with the new site's form: empty, or again after a refusal with what was typed."""

        def read() -> list[MembershipSite]:
            with staff.session() as session:
                return memberships.list_membership_sites(session)

        return screen(
            request,
            staff,
            "dashboard/memberships/list.html",
            section="memberships",
            title="Membership sites",
            status=refusal.status,
            sites=await anyio.to_thread.run_sync(read),
            can_edit=staff.can(UserRole.EDITOR),
            values=values or NEW_SITE,
            refusal=refusal,
        )

    @get("/")
    async def list_sites(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._list(request, staff)

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_site(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        values = _site_values(await checked_form(request))

        def create() -> UUID:
            data = parsed(
                "membership site",
                {**values, "landing_page_slug": values["landing_page_slug"] or None},
                MembershipSiteCreate,
            )
            with staff.session() as session:
                site = memberships.create_membership_site(
                    session, name=data.name, registration=data.registration, landing_page_slug=data.landing_page_slug
                )
                staff.audit(session, "membership_site.create", f"membership_site:{site.id}", fields=list(SITE_SETTINGS))
                return site.id

        async with shown_again(lambda refusal: self._list(request, staff, values, refusal)):
            site_id = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/memberships/{site_id}", "Membership site created")

    async def _site_screen(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        site_id: UUID,
        *,
        settings: dict[str, str] | None = None,
        settings_refusal: Refusal = NO_REFUSAL,
        invitee: dict[str, str] | None = None,
        invite_refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The site's settings, members and invitation form: first with the saved settings, or again after a
        refusal of one of its forms with what was typed in it and why."""

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
        saved = {**_settings_of(found["site"]), "landing_page_slug": found["site"].landing_page_slug or ""}
        return screen(
            request,
            staff,
            "dashboard/memberships/site.html",
            section="memberships",
            title=found["site"].name,
            status=max(settings_refusal.status, invite_refusal.status),
            can_edit=staff.can(UserRole.EDITOR),
            settings=settings or saved,
            settings_refusal=settings_refusal,
            invitee=invitee or NEW_MEMBER,
            invite_refusal=invite_refusal,
            **found,
        )

    @get("/{site_id:uuid}")
    async def show_site(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Template:
        return await self._site_screen(request, staff, site_id)

    @post("/{site_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def update_site(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Redirect:
        values = _site_values(await checked_form(request))

        def update() -> None:
            data = parsed("membership site", values, MembershipSiteUpdate)
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

        async with shown_again(
            lambda refusal: self._site_screen(request, staff, site_id, settings=values, settings_refusal=refusal)
        ):
            await anyio.to_thread.run_sync(update)
        return redirect(f"/app/memberships/{site_id}", "Membership site saved")

    @post("/{site_id:uuid}/members", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def invite_member(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], site_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)
        typed = {name: form.get(name, "").strip() for name in NEW_MEMBER}

        def invite() -> str:
            data = parsed(
                "member",
                {
                    "email": typed["email"],
                    "first_name": typed["first_name"] or None,
                    "last_name": typed["last_name"] or None,
                },
                MemberCreate,
            )
            with staff.session() as session:
                member = memberships.create_member(
                    session, site_id=site_id, email=data.email, first_name=data.first_name, last_name=data.last_name
                )
                given = [name for name in ("email", "first_name", "last_name") if getattr(data, name)]
                staff.audit(session, "member.invite", f"member:{member.id}", fields=given)
                return data.email

        async with shown_again(
            lambda refusal: self._site_screen(request, staff, site_id, invitee=typed, invite_refusal=refusal),
            conflict_field="email",
        ):
            email = await anyio.to_thread.run_sync(invite)
        return redirect(f"/app/memberships/{site_id}", f"Invitation sent to {email}")

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
