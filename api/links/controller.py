"""Tracked email links (tenant API and the public redirector), the one-time code exchange, and
``whoami`` for client-side personalization."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, post, route
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.cookies import visitor_cookie
from api.fields import HttpUrl
from api.openapi import AUTH, BODY, problems
from api.problems import problem
from api.tracking.collect import cors_headers, request_origin, same_site, site_for
from api.web import page
from tenants.accounts.service import ApiCaller
from tenants.contacts.service import get_contact
from tenants.errors import NotFound
from tenants.identity import service as identity
from tenants.isolation import tenant_session
from tenants.links import service as links
from tenants.models import Scope
from tenants.tracking.visitors import VISITOR_COOKIE

__all__ = ["LinksController", "exchange", "follow_link", "whoami"]


Recipient = Annotated[UUID, msgspec.Meta(description="The contact the email goes to; a click identifies as them")]
Target = Annotated[HttpUrl, msgspec.Meta(description="Where the link redirects")]
SendId = Annotated[str, msgspec.Meta(max_length=200, description="Your id of the send (campaign, broadcast)")]
ExpiresAt = Annotated[
    datetime, msgspec.Meta(tz=True, description="After this the link shows a 'not valid' page; in the future")
]


class LinkCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A tracked link for one recipient."""

    contact_id: Recipient
    target_url: Target
    send_id: SendId | None = None
    expires_at: ExpiresAt | None = None


class BulkItem(msgspec.Struct, forbid_unknown_fields=True):
    """One recipient's link in a send."""

    contact_id: Recipient
    target_url: Target


class BulkLinkCreate(msgspec.Struct, forbid_unknown_fields=True):
    """The links of a whole send, made in one transaction (all or none)."""

    links: Annotated[list[BulkItem], msgspec.Meta(min_length=1, max_length=links.MAX_BULK)]
    send_id: SendId | None = None
    expires_at: ExpiresAt | None = None


class LinkPublic(msgspec.Struct):
    id: UUID
    contact_id: UUID
    url: str
    """The short URL to put in the email."""
    target_url: str
    send_id: str | None
    expires_at: datetime | None


def _public(link: Any) -> LinkPublic:
    return LinkPublic(
        id=link.id,
        contact_id=link.contact_id,
        url=links.link_url(link),
        target_url=link.target_url,
        send_id=link.send_id,
        expires_at=link.expires_at,
    )


class LinksController(Controller):
    path = "/api/v1/links"
    tags = ["links"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Create a tracked link for one contact",
        responses=problems(*AUTH, *BODY, 404),
    )
    def create_link(self, caller: NamedDependency[ApiCaller], data: JSONBody[LinkCreate]) -> LinkPublic:
        """404 when the contact does not exist; 422 when ``expires_at`` is not in the future."""
        with caller.session(Scope.WRITE) as session:
            link = links.create_link(
                session,
                contact_id=data.contact_id,
                target_url=data.target_url,
                send_id=data.send_id,
                expires_at=data.expires_at,
            )
            session.flush()
            return _public(link)

    @post(
        "/bulk",
        status_code=201,
        sync_to_thread=True,
        summary="Create the links of a whole send",
        responses=problems(*AUTH, *BODY),
    )
    def create_links(self, caller: NamedDependency[ApiCaller], data: JSONBody[BulkLinkCreate]) -> list[LinkPublic]:
        """One link per item, in order; 422 naming the item when a contact does not exist."""
        with caller.session(Scope.WRITE) as session:
            created = links.create_links(
                session,
                send_id=data.send_id,
                items=[(item.contact_id, item.target_url) for item in data.links],
                expires_at=data.expires_at,
            )
            return [_public(link) for link in created]


@route("/l/{token:str}", http_method=["GET", "HEAD"], include_in_schema=False)
async def follow_link(request: Request[Any, Any, Any], token: FromPath[str]) -> Response[Any]:
    """Redirect to the link's own target; identify the browser unless a mail scanner is clicking."""
    try:
        result = await anyio.to_thread.run_sync(
            lambda: links.click(
                token,
                method=request.method,
                user_agent=request.headers.get("user-agent"),
                cookie_token=request.cookies.get(VISITOR_COOKIE),
            )
        )
    except NotFound:
        return page(request, "not_found.html", status=404, title="Link not valid", message="This link is not valid.")
    response: Response[Any] = Response(
        b"",
        status_code=302,
        headers={"Location": result.redirect_to, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
    if result.visitor_token:
        response.set_cookie(visitor_cookie(result.visitor_token))
    return response


class CodeExchange(msgspec.Struct):
    code: Annotated[str, msgspec.Meta(max_length=64)]
    token: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


@post("/t/{site_key:str}/exchange", include_in_schema=False, request_max_body_size=4096, status_code=200)
async def exchange(request: Request[Any, Any, Any], site_key: FromPath[str]) -> Response[Any]:
    """The tracker trades a tracked link's one-time code for identification of its own browser."""
    site = await site_for(site_key)
    origin = request_origin(request.headers)
    if site is None or origin is None or origin not in site.allowed_origins:
        return problem(403, "origin not allowed for this site")
    try:
        body = msgspec.json.decode(await request.body(), type=CodeExchange)
    except msgspec.DecodeError as error:
        return problem(400, f"malformed exchange: {error}", headers=cors_headers(origin))
    tokens = (request.cookies.get(VISITOR_COOKIE), body.token)  # our cookie first (hosted pages)
    result = await anyio.to_thread.run_sync(
        lambda: links.exchange_code(body.code, tenant_id=site.tenant_id, site_id=site.site_id, visitor_tokens=tokens)
    )
    if result is None:
        return problem(404, "this code is not valid (used, expired or unknown)", headers=cors_headers(origin))
    response: Response[Any] = Response(
        {"token": result.visitor_token, "visitor_id": str(result.visitor_id)},
        status_code=200,
        headers=cors_headers(origin),
    )
    if result.reissued and same_site(request.headers, origin):  # hosted pages: keep our HttpOnly cookie current
        response.set_cookie(visitor_cookie(result.visitor_token))
    return response


class WhoamiRequest(msgspec.Struct):
    token: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


def _whoami(tenant_id: UUID, token: str | None) -> dict[str, Any]:
    with tenant_session(tenant_id) as session:
        resolution = identity.resolve(session, visitor_token=token)
        answer: dict[str, Any] = {"level": resolution.level.value}
        if resolution.contact_id is not None:
            # Identified can be wrong (a forwarded email): only a first name, never personal data.
            answer["first_name"] = get_contact(session, resolution.contact_id).first_name
        return answer


@route(
    "/t/{site_key:str}/whoami",
    http_method=["GET", "POST"],
    include_in_schema=False,
    request_max_body_size=4096,
    status_code=200,
)
async def whoami(request: Request[Any, Any, Any], site_key: FromPath[str]) -> Response[Any]:
    """Client-side personalization: the level of this browser and, when identified, its first name.
    The token comes from our own cookie (same-site), the body (``trailmark('whoami', cb)``) or ``?token=``."""
    site = await site_for(site_key)
    origin = request_origin(request.headers)
    if site is None or origin is None or origin not in site.allowed_origins:
        return problem(403, "origin not allowed for this site")
    try:
        raw = await request.body() if request.method == "POST" else b""
        body = msgspec.json.decode(raw or b"{}", type=WhoamiRequest)
    except msgspec.DecodeError as error:
        return problem(400, f"malformed request: {error}", headers=cors_headers(origin))
    token = request.cookies.get(VISITOR_COOKIE) or body.token or request.query_params.get("token")
    answer = await anyio.to_thread.run_sync(_whoami, site.tenant_id, token)
    return Response(answer, headers={**cors_headers(origin), "Cache-Control": "no-store"})
