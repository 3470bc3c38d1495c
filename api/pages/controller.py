"""Tenant API: membership sites, members, pages (with their blocks) and previews."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from sqlmodel import Session, select

from api.problems import PROBLEM_JSON
from tenants.accounts.service import ApiCaller, get_tenant
from tenants.contacts.service import get_contact, sensitive_fields
from tenants.errors import Invalid
from tenants.memberships import service as memberships
from tenants.models import Form, Member, MembershipSite, Page, Scope
from tenants.pages import service as pages
from tenants.pages import serving
from tenants.settings import get_settings

__all__ = ["MembershipSitesController", "PagesController"]


class MembershipSiteWrite(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    registration: str | None = None
    landing_page_slug: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class MembershipSitePublic(msgspec.Struct):
    id: UUID
    name: str
    registration: str
    landing_page_slug: str | None
    login_url: str

    @classmethod
    def of(cls, site: MembershipSite, tenant_slug: str) -> MembershipSitePublic:
        return cls(
            id=site.id,
            name=site.name,
            registration=site.registration,
            landing_page_slug=site.landing_page_slug,
            login_url=f"{get_settings().base_url}/s/{tenant_slug}/m/{site.id}/login",
        )


class MemberCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(max_length=320)]
    first_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    last_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class MemberPublic(msgspec.Struct):
    id: UUID
    contact_id: UUID
    has_password: bool
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, member: Member) -> MemberPublic:
        return cls(
            id=member.id,
            contact_id=member.contact_id,
            has_password=member.password_hash is not None,
            disabled=member.disabled,
            created_at=member.created_at,
        )


class ProblemDetails(msgspec.Struct):
    """An error as every route answers it (RFC 9457, ``application/problem+json``; see api/problems.py)."""

    type: str
    title: str
    status: int
    detail: str


def _tenant_slug(session: Session) -> str:
    return get_tenant(session).slug


class MembershipSitesController(Controller):
    path = "/api/v1/membership-sites"
    tags = ["memberships"]
    security = [{"apiKey": []}]

    @post(status_code=201, sync_to_thread=True, summary="Create a membership site")
    def create_membership_site(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[MembershipSiteWrite]
    ) -> MembershipSitePublic:
        with caller.session(Scope.WRITE) as session:
            site = memberships.create_membership_site(
                session,
                name=data.name or "",
                registration=data.registration or "invite",
                landing_page_slug=data.landing_page_slug,
            )
            return MembershipSitePublic.of(site, _tenant_slug(session))

    @get(sync_to_thread=True, summary="List membership sites")
    def list_membership_sites(self, caller: NamedDependency[ApiCaller]) -> list[MembershipSitePublic]:
        with caller.session(Scope.READ) as session:
            slug = _tenant_slug(session)
            return [MembershipSitePublic.of(s, slug) for s in memberships.list_membership_sites(session)]

    @patch("/{site_id:uuid}", sync_to_thread=True, summary="Change a membership site")
    def update_membership_site(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], data: JSONBody[MembershipSiteWrite]
    ) -> MembershipSitePublic:
        with caller.session(Scope.WRITE) as session:
            site = memberships.update_membership_site(
                session,
                site_id,
                name=data.name,
                registration=data.registration,
                landing_page_slug=data.landing_page_slug,
            )
            return MembershipSitePublic.of(site, _tenant_slug(session))

    @delete("/{site_id:uuid}", status_code=204, sync_to_thread=True, summary="Delete a membership site")
    def delete_membership_site(self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID]) -> None:
        with caller.session(Scope.ADMIN) as session:
            memberships.delete_membership_site(session, site_id)

    @post("/{site_id:uuid}/members", status_code=201, sync_to_thread=True, summary="Add a member")
    def create_member(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], data: JSONBody[MemberCreate]
    ) -> MemberPublic:
        """The member gets an email with a link to set a password (valid 7 days)."""
        with caller.session(Scope.WRITE) as session:
            member = memberships.create_member(
                session, site_id=site_id, email=data.email, first_name=data.first_name, last_name=data.last_name
            )
            return MemberPublic.of(member)

    @post(
        "/{site_id:uuid}/members/{member_id:uuid}/invitation",
        status_code=202,
        sync_to_thread=True,
        summary="Send a member's invitation again",
        responses={
            404: ResponseSpec(
                ProblemDetails, description="No such membership site, or no such member of it", media_type=PROBLEM_JSON
            ),
            409: ResponseSpec(
                ProblemDetails,
                description="The member already has a password (they reset it from the login page) or is disabled",
                media_type=PROBLEM_JSON,
            ),
        },
    )
    def resend_invitation(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], member_id: FromPath[UUID]
    ) -> MemberPublic:
        """A fresh link to set a first password (valid 7 days), mailed to the member's address; earlier
        links keep working until a password is set."""
        with caller.session(Scope.WRITE) as session:
            return MemberPublic.of(memberships.resend_invitation(session, site_id, member_id))

    @get("/{site_id:uuid}/members", sync_to_thread=True, summary="List members")
    def list_members(self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID]) -> list[MemberPublic]:
        with caller.session(Scope.READ) as session:
            return [MemberPublic.of(m) for m in memberships.list_members(session, site_id)]


class PageWrite(msgspec.Struct, forbid_unknown_fields=True):
    slug: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    title: Annotated[str, msgspec.Meta(max_length=300)] | None = None
    blocks: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=200)] | None = None
    access_level: str | None = None
    membership_site_id: UUID | None = None
    redirect_to: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    meta: dict[str, str] | None = None


class PagePublic(msgspec.Struct):
    id: UUID
    slug: str
    title: str
    url: str
    access_level: str
    membership_site_id: UUID | None
    redirect_to: str | None
    meta: dict[str, Any]
    blocks: list[dict[str, Any]]
    updated_at: datetime

    @classmethod
    def of(cls, page: Page, tenant_slug: str) -> PagePublic:
        return cls(
            id=page.id,
            slug=page.slug,
            title=page.title,
            url=f"{get_settings().base_url}/s/{tenant_slug}/{page.slug}",
            access_level=page.access_level,
            membership_site_id=page.membership_site_id,
            redirect_to=page.redirect_to,
            meta=page.meta,
            blocks=page.blocks,
            updated_at=page.updated_at,
        )


class PagesController(Controller):
    path = "/api/v1/pages"
    tags = ["pages"]
    security = [{"apiKey": []}]

    @post(status_code=201, sync_to_thread=True, summary="Create a page")
    def create_page(self, caller: NamedDependency[ApiCaller], data: JSONBody[PageWrite]) -> PagePublic:
        """Blocks: ``{kind: html|form|link, html | form_id | url+text, visible_to: [levels], membership_site_id?}``.
        HTML is cleaned when saved; javascript: and data: URLs are refused."""
        with caller.session(Scope.WRITE) as session:
            page = pages.create_page(
                session,
                slug=data.slug or "",
                title=data.title or "",
                blocks=data.blocks or [],
                access_level=data.access_level or "anonymous",
                membership_site_id=data.membership_site_id,
                redirect_to=data.redirect_to,
                meta=data.meta,
            )
            return PagePublic.of(page, _tenant_slug(session))

    @get(sync_to_thread=True, summary="List pages")
    def list_pages(self, caller: NamedDependency[ApiCaller]) -> list[PagePublic]:
        with caller.session(Scope.READ) as session:
            slug = _tenant_slug(session)
            return [PagePublic.of(p, slug) for p in pages.list_pages(session)]

    @get("/{page_id:uuid}", sync_to_thread=True, summary="Get a page")
    def get_page(self, caller: NamedDependency[ApiCaller], page_id: FromPath[UUID]) -> PagePublic:
        with caller.session(Scope.READ) as session:
            return PagePublic.of(pages.get_page(session, page_id), _tenant_slug(session))

    @patch("/{page_id:uuid}", sync_to_thread=True, summary="Change a page (blocks are replaced as a whole)")
    def update_page(
        self, caller: NamedDependency[ApiCaller], page_id: FromPath[UUID], data: JSONBody[PageWrite]
    ) -> PagePublic:
        with caller.session(Scope.WRITE) as session:
            page = pages.update_page(
                session,
                page_id,
                title=data.title,
                blocks=data.blocks,
                access_level=data.access_level,
                membership_site_id=data.membership_site_id,
                redirect_to=data.redirect_to,
                meta=data.meta,
            )
            serving.pages.forget((caller.tenant_id, page.slug))  # this process shows the change at once
            return PagePublic.of(page, _tenant_slug(session))

    @delete("/{page_id:uuid}", status_code=204, sync_to_thread=True, summary="Delete a page")
    def delete_page(self, caller: NamedDependency[ApiCaller], page_id: FromPath[UUID]) -> None:
        with caller.session(Scope.ADMIN) as session:
            slug = pages.get_page(session, page_id).slug
            pages.delete_page(session, page_id)
            serving.pages.forget((caller.tenant_id, slug))

    @get("/{page_id:uuid}/preview", sync_to_thread=True, summary="The page as a level would see it")
    def preview_page(
        self,
        caller: NamedDependency[ApiCaller],
        page_id: FromPath[UUID],
        level: Annotated[str, Parameter(description="anonymous, identified or logged_in")] = "anonymous",
        contact_id: FromQuery[UUID | None] = None,
        membership_site_id: FromQuery[UUID | None] = None,
    ) -> Response[str]:
        if level not in pages.LEVELS:
            raise Invalid("unknown level", {"level": f"must be one of {list(pages.LEVELS)}"})
        with caller.session(Scope.READ) as session:
            page = pages.get_page(session, page_id)
            contact = get_contact(session, contact_id) if contact_id and level != "anonymous" else None
            viewer = pages.Viewer(level, contact, membership_site_id, sensitive_fields(session))
            forms = {str(f.id): f for f in session.exec(select(Form))}
            body = pages.render_page(page, viewer, forms=forms, base_url=get_settings().base_url, tracker_site_key=None)
            return Response(body, media_type=MediaType.HTML)
