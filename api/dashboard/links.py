"""Manage: Tracked links: the links of email sends with their clicks, one made by hand or a whole send at
once (pasted destination URLs → a table of tracked URLs, also as CSV), and a link as it goes into an email."""

from __future__ import annotations

import csv
import io
import re
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
from api.dashboard.manage_input import NO_REFUSAL, Refusal, parsed, shown_again
from api.dashboard.rendering import redirect, screen
from api.links.controller import BulkLinkCreate, LinkCreate
from api.web.csrf import checked_form
from tenants.contacts.service import find_by_email, get_contact
from tenants.errors import Invalid, NotFound
from tenants.links import service as links
from tenants.models import UserRole

__all__ = ["LinksController"]

LISTED = 200
"""Links on the list screen; a send's own list shows all of it."""
_ITEM = re.compile(r"^links(?:[\[-](\d+))?")
"""A send's error about its links (``links``), or one of them: ``links[3]`` from the service, ``links-3-target_url``
from the struct."""


def _recipient(session: Session, text: str, field: str = "recipient") -> str:
    """A contact given by id or by email, as the id the link service takes; else :class:`Invalid` on ``field``."""
    text = text.strip()
    try:
        contact_id = UUID(text)
    except ValueError:
        contact = find_by_email(session, text) if "@" in text else None
        if contact is None:
            reason = f"no contact has the address {text!r}" if "@" in text else "must be a contact's email or id"
            raise Invalid(f"the link is invalid: {reason}", {field: reason}) from None
        return str(contact.id)
    try:
        return str(get_contact(session, contact_id).id)
    except NotFound:
        raise Invalid("the link is invalid: no such contact", {field: "no contact has this id"}) from None


def _on_lines(error: Invalid, line_numbers: list[int]) -> Invalid:
    """A send's refusal with each reason about one link moved to the pasted line it came from."""
    errors = {}
    for name, reason in error.errors.items():
        item = _ITEM.match(name)
        if item is None:
            errors[name] = reason
        elif item.group(1) is None:
            errors["urls"] = reason
        else:
            errors["urls"] = f"line {line_numbers[int(item.group(1))]}: {reason}"
    message = f"the send is invalid: {errors['urls']}" if "urls" in errors else error.message
    return Invalid(message, errors)


NEW_LINK = {"recipient": "", "target_url": "", "send_id": ""}
"""The single link's form before anything is typed."""


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

    async def _editor(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        *,
        link: dict[str, str] | None = None,
        send: dict[str, str] | None = None,
        link_refusal: Refusal = NO_REFUSAL,
        send_refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The two forms (one link, a whole send): first empty, or again after a refusal of one of them with what
        was typed in it and why."""
        return screen(
            request,
            staff,
            "dashboard/links/new.html",
            section="links",
            title="New tracked links",
            status=max(link_refusal.status, send_refusal.status),
            link=link or NEW_LINK,
            send=send or {"urls": "", "recipient": "", "send_id": f"dashboard-{secrets.token_hex(4)}"},
            link_refusal=link_refusal,
            send_refusal=send_refusal,
        )

    @get("/new", guards=[requires(UserRole.EDITOR)])
    async def new_links(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._editor(request, staff)

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_link(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        form = await checked_form(request)
        typed = {name: form.get(name, "").strip() for name in NEW_LINK}

        def create() -> UUID:
            with staff.session() as session:
                data = parsed(
                    "link",
                    {
                        "contact_id": _recipient(session, typed["recipient"]),
                        "target_url": typed["target_url"],
                        "send_id": typed["send_id"] or None,
                    },
                    LinkCreate,
                )
                link = links.create_link(
                    session, contact_id=data.contact_id, target_url=data.target_url, send_id=data.send_id
                )
                session.flush()
                staff.audit(session, "link.create", f"link:{link.id}", fields=["contact_id", "target_url", "send_id"])
                return link.id

        async with shown_again(lambda refusal: self._editor(request, staff, link=typed, link_refusal=refusal)):
            link_id = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/links/{link_id}", "Tracked link created")

    @post("/bulk", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_links(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        """Each pasted line is a destination URL, or ``recipient, URL``; a bare URL goes to the form's recipient."""
        form = await checked_form(request)
        typed = {name: form.get(name, "") for name in ("urls", "recipient", "send_id")}
        send_id = typed["send_id"].strip() or f"dashboard-{secrets.token_hex(4)}"

        def create() -> int:
            with staff.session() as session:
                default = typed["recipient"].strip()
                items, line_numbers = [], []
                for number, line in enumerate(typed["urls"].splitlines(), start=1):
                    if not line.strip():
                        continue
                    bare = line.strip().lower().startswith(("http://", "https://"))
                    recipient, _, url = (default, "", line) if bare else line.partition(",")
                    if not recipient.strip():
                        reason = f"line {number} names no recipient, and the form gives none"
                        raise Invalid(f"the send is invalid: {reason}", {"urls": reason, "recipient": "is needed"})
                    field = "recipient" if bare else "urls"
                    try:
                        items.append({"contact_id": _recipient(session, recipient, field), "target_url": url.strip()})
                    except Invalid as error:
                        reason = error.errors[field] if bare else f"line {number}: {error.errors[field]}"
                        raise Invalid(f"the send is invalid: {reason}", {field: reason}) from None
                    line_numbers.append(number)
                try:
                    data = parsed("send", {"links": items, "send_id": send_id}, BulkLinkCreate)
                    created = links.create_links(
                        session, send_id=data.send_id, items=[(item.contact_id, item.target_url) for item in data.links]
                    )
                except Invalid as error:
                    raise _on_lines(error, line_numbers) from None
                staff.audit(session, "links.bulk_create", f"send:{send_id}", count=len(created))
                return len(created)

        async with shown_again(lambda refusal: self._editor(request, staff, send=typed, send_refusal=refusal)):
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
