"""Manage: Pages: hosted pages and their blocks (kind, content, who sees each), with a live preview as each
identification level, rendered by the very code that serves hosted pages (``tenants.pages.serving``)."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlmodel import Session

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, changed_fields, parsed, row_count, shown_again
from api.dashboard.rendering import redirect, screen
from api.pages.controller import PageCreate, PageUpdate
from api.pages.rendering import render_hosted_page
from api.web.csrf import checked_form, checked_form_lists
from api.web.templates import render
from tenants.accounts.service import get_tenant
from tenants.forms.service import list_forms
from tenants.identity.service import Level
from tenants.memberships.service import list_membership_sites
from tenants.memberships.sessions import MemberSession
from tenants.models import Contact, Page, UserRole
from tenants.pages import service as pages
from tenants.pages.serving import bundle_of, page_result, viewer_of
from tenants.settings import get_settings

__all__ = ["PagesController"]

LEVEL_LABELS = {
    Level.ANONYMOUS.value: "Anonymous",
    Level.IDENTIFIED.value: "Identified",
    Level.LOGGED_IN.value: "Logged in",
}
BLOCK_CONTENT = {"html": ("html",), "form": ("form_id",), "link": ("url", "text")}
"""What each kind of block holds, as the page API's block structs name it."""
MOST_BLOCK_ROWS = 201
"""The most blocks a page takes (``Blocks``) and the empty row under them."""
PREVIEW_HEADERS = {"Content-Security-Policy": "sandbox", "Cache-Control": "no-store", "X-Frame-Options": "SAMEORIGIN"}
"""The preview runs no script and submits no form, even opened on its own."""


def _blocks_of(form: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The block rows (``blocks-<n>-…``) as the page API's blocks; a row without a kind is left out."""

    def one(name: str) -> str:
        return (form.get(name) or [""])[-1]

    blocks = []
    for index in range(row_count(one("block_rows"), MOST_BLOCK_ROWS)):
        kind = one(f"blocks-{index}-kind")
        if not kind:
            continue
        block: dict[str, Any] = {"kind": kind, "visible_to": form.get(f"blocks-{index}-visible_to", [])}
        if block_id := one(f"blocks-{index}-id"):
            block["id"] = block_id
        for field in BLOCK_CONTENT.get(kind, ()):
            block[field] = one(f"blocks-{index}-{field}")
        if site := one(f"blocks-{index}-membership_site_id"):
            block["membership_site_id"] = site
        blocks.append(block)
    return blocks


def _page_values(form: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "title": (form.get("title") or [""])[-1],
        "access_level": (form.get("access_level") or ["anonymous"])[-1],
        "blocks": _blocks_of(form),
    }


def _parsed_update(values: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    data = parsed("page", values, PageUpdate)
    blocks = [] if data.blocks is msgspec.UNSET else [msgspec.to_builtins(block) for block in data.blocks]
    return str(data.title), blocks, str(data.access_level)


def _sample_contact(tenant_id: UUID) -> Contact:
    """Who an identified or logged-in preview shows in merge fields: a made-up contact, never a real one."""
    return Contact(
        tenant_id=tenant_id, email="ada@example.com", first_name="Ada", last_name="Lovelace", phone="+441234567890"
    )


def _preview_html(session: Session, staff: StaffCaller, page: Page, level: str) -> str:
    """The page as a viewer of ``level`` gets it from the hosted-pages renderer (a synthetic viewer)."""
    bundle = bundle_of(session, staff.tenant_id, page)
    contact = _sample_contact(staff.tenant_id)
    member_site = page.membership_site_id or next(
        (UUID(b["membership_site_id"]) for b in page.blocks if b.get("membership_site_id")), None
    )
    member = None
    if level == Level.LOGGED_IN.value:
        member = MemberSession(
            session_id="preview",
            tenant_id=str(staff.tenant_id),
            member_id=str(UUID(int=0)),
            contact_id=str(contact.id),
            membership_site_id=str(member_site or UUID(int=0)),
            visitor_id=None,
            created_at=time.time(),
        )
    identity = None if level == Level.ANONYMOUS.value else (contact, "preview")
    path = f"/s/{bundle.tenant_slug}/{page.slug}"
    result = page_result(bundle, viewer_of(bundle, member, identity), path=path)
    if result.location is not None:
        return render(
            "dashboard/pages/preview_elsewhere.html", who=LEVEL_LABELS[level].lower(), location=result.location
        )
    if result.view is None:
        return render("pages/not_allowed.html", needed=result.needed or "log in")
    return render_hosted_page(result.view, base_url=get_settings().base_url, tracker_site_key=None)


def _preview(body: str) -> Response[str]:
    return Response(body, media_type=MediaType.HTML, headers=PREVIEW_HEADERS)


class PagesController(Controller):
    path = "/app/pages"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    async def _list(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        values: dict[str, str] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The pages with the new page's form: empty, or again after a refusal with what was typed and why."""

        def read() -> tuple[list[Page], str]:
            with staff.session() as session:
                return pages.list_pages(session), get_tenant(session).slug

        listed, tenant_slug = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/pages/list.html",
            section="pages",
            title="Pages",
            status=refusal.status,
            pages=listed,
            page_base=f"{get_settings().base_url}/s/{tenant_slug}",
            levels=LEVEL_LABELS,
            can_edit=staff.can(UserRole.EDITOR),
            values=values or {"slug": "", "title": ""},
            refusal=refusal,
        )

    @get("/")
    async def list_pages(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._list(request, staff)

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_page(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        form = await checked_form(request)
        values = {"slug": form.get("slug", "").strip(), "title": form.get("title", "")}

        def create() -> UUID:
            data = parsed("page", values, PageCreate)
            with staff.session() as session:
                page = pages.create_page(session, slug=data.slug, title=data.title, blocks=[])
                staff.audit(session, "page.create", f"page:{page.id}", fields=["slug", "title"])
                return page.id

        async with shown_again(lambda refusal: self._list(request, staff, values, refusal), conflict_field="slug"):
            page_id = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/pages/{page_id}", "Page created: add its blocks")

    async def _editor(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        page_id: UUID,
        level: Level = Level.ANONYMOUS,
        values: dict[str, Any] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The page editor: first with the saved page (its preview as ``level``), or again after a refusal with
        what was typed and why (the preview still shows the saved page)."""

        def read() -> dict[str, Any]:
            with staff.session() as session:
                page = pages.get_page(session, page_id)
                return {
                    "page": page,
                    "forms": list_forms(session),
                    "sites": list_membership_sites(session),
                    "page_url": f"{get_settings().base_url}/s/{get_tenant(session).slug}/{page.slug}",
                }

        found = await anyio.to_thread.run_sync(read)
        saved = found["page"]
        return screen(
            request,
            staff,
            "dashboard/pages/edit.html",
            section="pages",
            title=saved.title,
            status=refusal.status,
            values=values or {"title": saved.title, "access_level": saved.access_level, "blocks": saved.blocks},
            refusal=refusal,
            levels=LEVEL_LABELS,
            level=level.value,
            kinds=list(BLOCK_CONTENT),
            blank_rows=1,
            can_edit=staff.can(UserRole.EDITOR),
            **found,
        )

    @get("/{page_id:uuid}")
    async def edit_page(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        page_id: FromPath[UUID],
        level: FromQuery[Level] = Level.ANONYMOUS,
    ) -> Template:
        return await self._editor(request, staff, page_id, level)

    @post("/{page_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def update_page(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], page_id: FromPath[UUID]
    ) -> Redirect:
        values = _page_values(await checked_form_lists(request))

        def update() -> None:
            title, blocks, access_level = _parsed_update(values)
            with staff.session() as session:
                saved = pages.get_page(session, page_id)
                before = {"title": saved.title, "blocks": list(saved.blocks), "access_level": saved.access_level}
                page = pages.update_page(session, page_id, title=title, blocks=blocks, access_level=access_level)
                after = {"title": page.title, "blocks": page.blocks, "access_level": page.access_level}
                if changed := changed_fields(before, after):
                    staff.audit(session, "page.update", f"page:{page.id}", fields=changed)

        async with shown_again(lambda refusal: self._editor(request, staff, page_id, values=values, refusal=refusal)):
            await anyio.to_thread.run_sync(update)
        return redirect(f"/app/pages/{page_id}", "Page saved")

    @get("/{page_id:uuid}/preview")
    async def preview_saved(
        self, staff: NamedDependency[StaffCaller], page_id: FromPath[UUID], level: FromQuery[Level] = Level.ANONYMOUS
    ) -> Response[str]:
        """The saved page as a viewer of ``level`` sees it (the preview frame's first content)."""

        def render() -> str:
            with staff.session() as session:
                return _preview_html(session, staff, pages.get_page(session, page_id), level.value)

        return _preview(await anyio.to_thread.run_sync(render))

    @post("/{page_id:uuid}/preview", status_code=200)
    async def preview_draft(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], page_id: FromPath[UUID]
    ) -> Response[str]:
        """The editor's unsaved form as a viewer of the chosen level would see it; nothing is saved."""
        form = await checked_form_lists(request)
        level = (
            Level((form.get("level") or ["anonymous"])[-1])
            if (form.get("level") or ["anonymous"])[-1] in (LEVEL_LABELS)
            else Level.ANONYMOUS
        )
        title, blocks, access_level = _parsed_update(_page_values(form))

        def render() -> str:
            with staff.session() as session:
                draft = pages.draft_page(session, page_id, title=title, blocks=blocks, access_level=access_level)
                return _preview_html(session, staff, draft, level.value)

        return _preview(await anyio.to_thread.run_sync(render))
