"""Tenant API: membership sites, members, pages (with their blocks) and previews."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from sqlmodel import Session, select

from api.fields import END, NOT_BLANK, Email, Slug, given
from api.openapi import AUTH, BODY, creates, problems
from api.pages.rendering import render_hosted_page
from tenants.accounts.service import ApiCaller, get_tenant
from tenants.contacts.service import get_contact, sensitive_fields
from tenants.identity.service import Level
from tenants.memberships import service as memberships
from tenants.models import Form, Member, MembershipSite, Page, Scope
from tenants.pages import service as pages
from tenants.settings import get_settings

__all__ = ["MembershipSitesController", "PagesController"]


SiteName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="The membership site's name")
]
Registration = Annotated[
    Literal["open", "invite"],
    msgspec.Meta(description="open: anyone may register; invite: only members the tenant adds"),
]
LandingPageSlug = Annotated[
    str, msgspec.Meta(max_length=100, description="The page members land on after logging in; empty for none")
]


class MembershipSiteCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A membership site: members log in to it and see the pages it guards."""

    name: SiteName
    registration: Registration = "invite"
    landing_page_slug: LandingPageSlug | None = None


class MembershipSiteUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted fields stay."""

    name: SiteName | msgspec.UnsetType = msgspec.UNSET
    registration: Registration | msgspec.UnsetType = msgspec.UNSET
    landing_page_slug: LandingPageSlug | msgspec.UnsetType = msgspec.UNSET


class MembershipSitePublic(msgspec.Struct):
    id: UUID
    name: str
    registration: Registration
    landing_page_slug: str | None
    login_url: str

    @classmethod
    def of(cls, site: MembershipSite, tenant_slug: str) -> MembershipSitePublic:
        return cls(
            id=site.id,
            name=site.name,
            registration=cast(Registration, site.registration),  # the service stores only these
            landing_page_slug=site.landing_page_slug,
            login_url=f"{get_settings().base_url}/s/{tenant_slug}/m/{site.id}/login",
        )


class MemberCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A member, found or made as a contact by email."""

    email: Annotated[Email, msgspec.Meta(description="The member's email: the contact and the login")]
    first_name: Annotated[str, msgspec.Meta(max_length=200, description="Stored on the contact")] | None = None
    last_name: Annotated[str, msgspec.Meta(max_length=200, description="Stored on the contact")] | None = None


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


def _tenant_slug(session: Session) -> str:
    return get_tenant(session).slug


class MembershipSitesController(Controller):
    path = "/api/v1/membership-sites"
    tags = ["memberships"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Create a membership site",
        responses=problems(*AUTH, *BODY),
        operation_class=creates(
            "site_id", "updateMembershipSite", "deleteMembershipSite", "createMember", "listMembers"
        ),
        response_description="The membership site with its login URL",
    )
    def create_membership_site(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[MembershipSiteCreate]
    ) -> MembershipSitePublic:
        """Members log in at its ``login_url``; pages and blocks can be limited to it."""
        with caller.session(Scope.WRITE) as session:
            site = memberships.create_membership_site(
                session,
                name=data.name,
                registration=data.registration,
                landing_page_slug=data.landing_page_slug,
            )
            return MembershipSitePublic.of(site, _tenant_slug(session))

    @get(sync_to_thread=True, summary="List membership sites", responses=problems(*AUTH))
    def list_membership_sites(self, caller: NamedDependency[ApiCaller]) -> list[MembershipSitePublic]:
        """Every membership site of the tenant."""
        with caller.session(Scope.READ) as session:
            slug = _tenant_slug(session)
            return [MembershipSitePublic.of(s, slug) for s in memberships.list_membership_sites(session)]

    @patch(
        "/{site_id:uuid}",
        sync_to_thread=True,
        summary="Change a membership site",
        responses=problems(*AUTH, *BODY, 404),
    )
    def update_membership_site(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], data: JSONBody[MembershipSiteUpdate]
    ) -> MembershipSitePublic:
        """Only what is given changes."""
        with caller.session(Scope.WRITE) as session:
            site = memberships.update_membership_site(
                session,
                site_id,
                name=given(data.name),
                registration=given(data.registration),
                landing_page_slug=given(data.landing_page_slug),
            )
            return MembershipSitePublic.of(site, _tenant_slug(session))

    @delete(
        "/{site_id:uuid}",
        status_code=204,
        sync_to_thread=True,
        summary="Delete a membership site",
        responses=problems(*AUTH, 400, 404),
    )
    def delete_membership_site(self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID]) -> None:
        """Needs ``admin``."""
        with caller.session(Scope.ADMIN) as session:
            memberships.delete_membership_site(session, site_id)

    @post(
        "/{site_id:uuid}/members",
        status_code=201,
        sync_to_thread=True,
        summary="Add a member",
        responses=problems(*AUTH, *BODY, 404, 409),
    )
    def create_member(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], data: JSONBody[MemberCreate]
    ) -> MemberPublic:
        """The member gets an email with a link to set a password (valid 7 days); 409 when already a member."""
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
        responses=problems(*AUTH, 400, 404, 409),
    )
    def resend_invitation(
        self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID], member_id: FromPath[UUID]
    ) -> MemberPublic:
        """A fresh link to set a first password (valid 7 days), mailed to the member's address; earlier
        links keep working until a password is set."""
        with caller.session(Scope.WRITE) as session:
            return MemberPublic.of(memberships.resend_invitation(session, site_id, member_id))

    @get(
        "/{site_id:uuid}/members",
        sync_to_thread=True,
        summary="List members",
        responses=problems(*AUTH, 400, 404),
    )
    def list_members(self, caller: NamedDependency[ApiCaller], site_id: FromPath[UUID]) -> list[MemberPublic]:
        """The members of one membership site."""
        with caller.session(Scope.READ) as session:
            return [MemberPublic.of(m) for m in memberships.list_members(session, site_id)]


SAFE_URL = r"^(?:(?:https?|mailto):|/(?!/))"
"""http(s), mailto, or a path on this site; never javascript:, data: or another scheme."""
ALL_LEVELS = [Level.ANONYMOUS, Level.IDENTIFIED, Level.LOGGED_IN]


class BlockBase(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", kw_only=True):
    id: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=64, description="Kept when given (to target it); made up otherwise"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    visible_to: Annotated[
        list[Level], msgspec.Meta(min_length=1, description="The identification levels that see it; all if omitted")
    ] = msgspec.field(default_factory=lambda: list(ALL_LEVELS))
    membership_site_id: Annotated[
        UUID | None, msgspec.Meta(description="Only members logged in to this membership site see it")
    ] = None


class HtmlBlock(BlockBase, tag="html"):
    """Tenant HTML, cleaned when saved; merge fields like ``{{contact.first_name|there}}`` are filled in.
    javascript:, data: and vbscript: URLs are refused (422)."""

    html: Annotated[str, msgspec.Meta(max_length=100_000, description="The block's HTML")] = ""


class FormBlock(BlockBase, tag="form"):
    """One of the tenant's forms, embedded."""

    form_id: Annotated[UUID, msgspec.Meta(description="A form of this tenant (422 when there is none)")]


class LinkBlock(BlockBase, tag="link"):
    """A link; its text may hold merge fields."""

    url: Annotated[
        str,
        msgspec.Meta(max_length=4096, pattern=SAFE_URL, description="An http(s) or mailto URL, or a path on this site"),
    ]
    text: Annotated[str, msgspec.Meta(max_length=500, description="The link's text")] = ""


Block = HtmlBlock | FormBlock | LinkBlock


class PageMeta(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The page's ``<meta>`` tags."""

    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    robots: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    og_image: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.field(
        default=msgspec.UNSET, name="og:image"
    )


PageTitle = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=300, pattern=NOT_BLANK, description="The page's title; may hold merge fields"
    ),
]
Blocks = Annotated[list[Block], msgspec.Meta(max_length=200, description="The page's content, in order")]
AccessLevel = Annotated[Level, msgspec.Meta(description="The lowest identification level that may see the page")]
GuardingSite = Annotated[
    UUID, msgspec.Meta(description="With access_level logged_in: only members of this membership site")
]
PageRedirect = Annotated[
    str,
    msgspec.Meta(
        max_length=4096,
        pattern=rf"{SAFE_URL}|^{END}",
        description="Send visitors elsewhere (http(s) or a path); empty for none",
    ),
]


class PageCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A hosted page, served at ``/s/{tenant_slug}/{slug}``."""

    slug: Annotated[Slug, msgspec.Meta(description="The page's path; unique in the tenant (409 when taken)")]
    title: PageTitle
    blocks: Blocks = msgspec.field(default_factory=list)
    access_level: AccessLevel = Level.ANONYMOUS
    membership_site_id: GuardingSite | None = None
    redirect_to: PageRedirect | None = None
    meta: PageMeta | None = None


class PageUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted fields stay. ``blocks`` replaces all blocks."""

    title: PageTitle | msgspec.UnsetType = msgspec.UNSET
    blocks: Blocks | msgspec.UnsetType = msgspec.UNSET
    access_level: AccessLevel | msgspec.UnsetType = msgspec.UNSET
    membership_site_id: GuardingSite | msgspec.UnsetType = msgspec.UNSET
    redirect_to: PageRedirect | msgspec.UnsetType = msgspec.UNSET
    meta: PageMeta | msgspec.UnsetType = msgspec.UNSET


def _blocks(blocks: list[Block]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(block) for block in blocks]


def _meta(meta: PageMeta | None) -> dict[str, str] | None:
    return None if meta is None else msgspec.to_builtins(meta)


class PagePublic(msgspec.Struct):
    id: UUID
    slug: str
    title: str
    url: str
    access_level: Level
    membership_site_id: UUID | None
    redirect_to: str | None
    meta: PageMeta
    blocks: list[Block]
    updated_at: datetime

    @classmethod
    def of(cls, page: Page, tenant_slug: str) -> PagePublic:
        return cls(
            id=page.id,
            slug=page.slug,
            title=page.title,
            url=f"{get_settings().base_url}/s/{tenant_slug}/{page.slug}",
            access_level=Level(page.access_level),
            membership_site_id=page.membership_site_id,
            redirect_to=page.redirect_to,
            meta=msgspec.convert(page.meta, PageMeta),
            blocks=msgspec.convert(page.blocks, list[Block]),
            updated_at=page.updated_at,
        )


class PagesController(Controller):
    path = "/api/v1/pages"
    tags = ["pages"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Create a page",
        responses=problems(*AUTH, *BODY, 409),
        operation_class=creates("page_id", "getPage", "updatePage", "deletePage", "previewPage"),
        response_description="The page with its public URL",
    )
    def create_page(self, caller: NamedDependency[ApiCaller], data: JSONBody[PageCreate]) -> PagePublic:
        """Blocks of kind html, form or link, each visible to some levels. HTML is cleaned when saved;
        javascript: and data: URLs are refused; a form or membership site that does not exist is 422."""
        with caller.session(Scope.WRITE) as session:
            page = pages.create_page(
                session,
                slug=data.slug,
                title=data.title,
                blocks=_blocks(data.blocks),
                access_level=data.access_level,
                membership_site_id=data.membership_site_id,
                redirect_to=data.redirect_to,
                meta=_meta(data.meta),
            )
            return PagePublic.of(page, _tenant_slug(session))

    @get(sync_to_thread=True, summary="List pages", responses=problems(*AUTH))
    def list_pages(self, caller: NamedDependency[ApiCaller]) -> list[PagePublic]:
        """Every page of the tenant, by slug."""
        with caller.session(Scope.READ) as session:
            slug = _tenant_slug(session)
            return [PagePublic.of(p, slug) for p in pages.list_pages(session)]

    @get("/{page_id:uuid}", sync_to_thread=True, summary="Get a page", responses=problems(*AUTH, 400, 404))
    def get_page(self, caller: NamedDependency[ApiCaller], page_id: FromPath[UUID]) -> PagePublic:
        with caller.session(Scope.READ) as session:
            return PagePublic.of(pages.get_page(session, page_id), _tenant_slug(session))

    @patch(
        "/{page_id:uuid}",
        sync_to_thread=True,
        summary="Change a page (blocks are replaced as a whole)",
        responses=problems(*AUTH, *BODY, 404),
    )
    def update_page(
        self, caller: NamedDependency[ApiCaller], page_id: FromPath[UUID], data: JSONBody[PageUpdate]
    ) -> PagePublic:
        """Only what is given changes; the same rules as creating apply."""
        with caller.session(Scope.WRITE) as session:
            page = pages.update_page(
                session,
                page_id,
                title=given(data.title),
                blocks=None if data.blocks is msgspec.UNSET else _blocks(data.blocks),
                access_level=given(data.access_level),
                membership_site_id=given(data.membership_site_id),
                redirect_to=given(data.redirect_to),
                meta=None if data.meta is msgspec.UNSET else _meta(data.meta),
            )
            return PagePublic.of(page, _tenant_slug(session))

    @delete(
        "/{page_id:uuid}",
        status_code=204,
        sync_to_thread=True,
        summary="Delete a page",
        responses=problems(*AUTH, 400, 404),
    )
    def delete_page(self, caller: NamedDependency[ApiCaller], page_id: FromPath[UUID]) -> None:
        """It stops being served at once (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            pages.delete_page(session, page_id)

    @get(
        "/{page_id:uuid}/preview",
        sync_to_thread=True,
        summary="The page as a level would see it",
        media_type=MediaType.HTML,
        responses=problems(*AUTH, 400, 404),
    )
    def preview_page(
        self,
        caller: NamedDependency[ApiCaller],
        page_id: FromPath[UUID],
        level: Annotated[Level, Parameter(description="The identification level to preview")] = Level.ANONYMOUS,
        contact_id: Annotated[
            UUID | None, Parameter(description="Fill merge fields from this contact (not for anonymous)")
        ] = None,
        membership_site_id: Annotated[
            UUID | None, Parameter(description="The membership site the viewer is logged in to")
        ] = None,
    ) -> Response[str]:
        """The page's HTML for that viewer; 404 when the page or the contact does not exist."""
        with caller.session(Scope.READ) as session:
            page = pages.get_page(session, page_id)
            contact = get_contact(session, contact_id) if contact_id and level != Level.ANONYMOUS else None
            viewer = pages.Viewer(level.value, contact, membership_site_id, sensitive_fields(session))
            forms = {str(f.id): f for f in session.exec(select(Form))}
            view = pages.page_view(page, viewer, forms=forms)
            body = render_hosted_page(view, base_url=get_settings().base_url, tracker_site_key=None)
            return Response(body, media_type=MediaType.HTML)
