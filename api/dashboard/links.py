"""Manage: Tracked links: the links of email sends with their clicks, one made by hand or a whole send at
once (pasted destination URLs → a table of tracked URLs, also as CSV), and a link as it goes into an email."""

from __future__ import annotations

import csv
import io
import secrets
from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlmodel import Session

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import lines, parsed
from api.dashboard.rendering import redirect, screen
from api.links.controller import BulkLinkCreate, LinkCreate
from api.web.csrf import checked_form
from tenants.contacts.service import find_by_email
from tenants.errors import Invalid
from tenants.links import service as links
from tenants.models import UserRole

__all__ = ["LinksController"]

LISTED = 200
"""Links on the list screen; a send's own list shows all of it."""


def _recipient(session: Session, text: str) -> str:
    """A contact given by id or by email, as the id the link service takes."""
    text = text.strip()
    try:
        return str(UUID(text))
    except ValueError:
        contact = find_by_email(session, text) if "@" in text else None
        if contact is None:
            raise Invalid(f"no contact has the address {text!r}") from None
        return str(contact.id)


def _rows(found: list[links.LinkWithClicks]) -> list[dict[str, Any]]:
    return [
        {
            "id": item.link.id,
            "url": links.link_url(item.link),
            "target_url": item.link.target_url,
            "send_id": item.link.send_id,
            "contact_id": item.link.contact_id,
            "clicks": item.clicks,
        }
        for item in found
    ]


class LinksController(Controller):
    path = "/app/links"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_links(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        send_id: FromQuery[str | None] = None,
    ) -> Template:
        def read() -> list[dict[str, Any]]:
            with staff.session() as session:
                return _rows(
                    links.list_links(session, send_id=send_id or None, limit=links.MAX_BULK if send_id else LISTED)
                )

        return screen(
            request,
            staff,
            "dashboard/links/list.html",
            section="links",
            title="Tracked links",
            rows=await anyio.to_thread.run_sync(read),
            send_id=send_id or "",
            can_edit=staff.can(UserRole.EDITOR),
        )

    @get("/export.csv")
    async def export_links(self, staff: NamedDependency[StaffCaller], send_id: FromQuery[str]) -> Response[str]:
        """A send's tracked URLs as CSV, one row per link, for a mailing tool's merge."""

        def read() -> list[dict[str, Any]]:
            with staff.session() as session:
                return _rows(links.list_links(session, send_id=send_id))

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["tracked_url", "target_url", "contact_id", "send_id", "clicks"])
        for row in await anyio.to_thread.run_sync(read):
            writer.writerow([row["url"], row["target_url"], row["contact_id"], row["send_id"] or "", row["clicks"]])
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="tracked-links.csv"', "Cache-Control": "no-store"},
        )

    @get("/new", guards=[requires(UserRole.EDITOR)])
    async def new_links(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return screen(
            request,
            staff,
            "dashboard/links/new.html",
            section="links",
            title="New tracked links",
            suggested_send=f"dashboard-{secrets.token_hex(4)}",
        )

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_link(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        form = await checked_form(request)

        def create() -> UUID:
            with staff.session() as session:
                data = parsed(
                    "link",
                    {
                        "contact_id": _recipient(session, form.get("recipient", "")),
                        "target_url": form.get("target_url", "").strip(),
                        "send_id": form.get("send_id", "").strip() or None,
                    },
                    LinkCreate,
                )
                link = links.create_link(
                    session, contact_id=data.contact_id, target_url=data.target_url, send_id=data.send_id
                )
                session.flush()
                staff.audit(session, "link.create", f"link:{link.id}", fields=["contact_id", "target_url", "send_id"])
                return link.id

        return redirect(f"/app/links/{await anyio.to_thread.run_sync(create)}", "Tracked link created")

    @post("/bulk", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_links(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        """Each pasted line is a destination URL, or ``recipient, URL``; a bare URL goes to the form's recipient."""
        form = await checked_form(request)
        send_id = form.get("send_id", "").strip() or f"dashboard-{secrets.token_hex(4)}"

        def create() -> int:
            with staff.session() as session:
                default = form.get("recipient", "").strip()
                items = []
                for number, line in enumerate(lines(form.get("urls", "")), start=1):
                    bare = line.lower().startswith(("http://", "https://"))
                    recipient, _, url = (default, "", line) if bare else line.partition(",")
                    if not recipient.strip():
                        raise Invalid(f"line {number} names no recipient, and the form gives none")
                    items.append({"contact_id": _recipient(session, recipient), "target_url": url.strip()})
                data = parsed("send", {"links": items, "send_id": send_id}, BulkLinkCreate)
                created = links.create_links(
                    session, send_id=data.send_id, items=[(item.contact_id, item.target_url) for item in data.links]
                )
                staff.audit(session, "links.bulk_create", f"send:{send_id}", count=len(created))
                return len(created)

        count = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/links?send_id={send_id}", f"{count} tracked links created")

    @get("/{link_id:uuid}")
    async def show_link(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], link_id: FromPath[UUID]
    ) -> Template:
        def read() -> dict[str, Any]:
            with staff.session() as session:
                link = links.get_link(session, link_id)
                return {"link": link, "url": links.link_url(link)}

        found = await anyio.to_thread.run_sync(read)
        return screen(request, staff, "dashboard/links/show.html", section="links", title="Tracked link", **found)
