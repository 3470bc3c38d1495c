"""Hosted pages as browsers see them: ``/s/{tenant_slug}/{page_slug}`` and a tenant's custom domain.

A page view is on every visitor's path: with warm caches an identified visitor is answered without a database
read or a thread, and the body comes from the compiled ``pages/page.html`` (``api.pages.rendering``).
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import MediaType, Request, Response, get
from litestar.params import FromPath

from api.cookies import session_cookie_name, visitor_cookie
from api.loading import load_once
from api.pages.rendering import render_hosted_page
from api.web.templates import page
from tenants.cache import Missing
from tenants.identity.cache import identities
from tenants.memberships.sessions import read_session
from tenants.models import Contact, new_id
from tenants.pages.serving import (
    PageBundle,
    PageResult,
    find_tenant,
    load_bundle,
    load_contact,
    page_result,
    pages,
    tenants_by_handle,
    viewer_of,
)
from tenants.settings import get_settings
from tenants.tracking.visitors import VISITOR_COOKIE, visitor_of_browser

__all__ = ["PAGE_HANDLERS", "tenant_of_slug"]

NO_STORE = {"Cache-Control": "no-store"}


def _answer(request: Request[Any, Any, Any], result: PageResult, bundle: PageBundle | None) -> Response[Any]:
    if result.location:
        return Response(b"", status_code=result.status, headers={"Location": result.location, **NO_STORE})
    if result.view is not None and bundle is not None:
        body = render_hosted_page(
            result.view, base_url=get_settings().base_url, tracker_site_key=bundle.tracker_site_key
        )
        return Response(body, media_type=MediaType.HTML, headers=NO_STORE)
    if result.status == 403:
        return page(request, "pages/not_allowed.html", status=403, needed=result.needed)
    return page(request, "not_found.html", status=404, title="Not found", message="This page does not exist.")


async def tenant_of_slug(tenant_slug: str) -> UUID | None:
    """The tenant behind a hosted-pages slug (cached; concurrent misses share one lookup)."""
    handle = f"tenant_slug:{tenant_slug}"
    cached = tenants_by_handle.get(handle)
    if not isinstance(cached, Missing):
        return cached
    return await load_once(handle, lambda: find_tenant(slug=tenant_slug))


async def _serve(request: Request[Any, Any, Any], tenant_id: UUID | None, page_slug: str) -> Response[Any]:
    """A page view. Warm caches answer an identified visitor without a database read or a thread."""
    bundle: PageBundle | None = None
    if tenant_id is not None:
        cached = pages.get((tenant_id, page_slug))
        if isinstance(cached, Missing):
            bundle = await load_once(("page", tenant_id, page_slug), lambda: load_bundle(tenant_id, page_slug))
        else:
            bundle = cached
    if tenant_id is None or bundle is None:
        return _answer(request, PageResult(404), None)
    browser = visitor_of_browser(
        tenant_id, request.cookies.get(VISITOR_COOKIE), first_hit=(new_id(), int(time.time() * 1000))
    )
    session_cookie = request.cookies.get(session_cookie_name())
    member = await anyio.to_thread.run_sync(read_session, tenant_id, session_cookie) if session_cookie else None
    identity: tuple[Contact, str | None] | None = None
    if member is not None or not browser.is_new:  # a brand-new browser is nobody yet
        contact_id = UUID(member.contact_id) if member else None
        key = (tenant_id, contact_id or browser.visitor_id)
        known = identities.get(key)
        if isinstance(known, tuple):
            identity = known
        else:
            identity = await load_once(
                ("identity", *key),
                lambda: load_contact(tenant_id, visitor_id=browser.visitor_id, contact_id=contact_id),
            )
    response = _answer(request, page_result(bundle, viewer_of(bundle, member, identity), path=request.url.path), bundle)
    if browser.reissued:
        response.set_cookie(visitor_cookie(browser.token))
    return response


@get("/s/{tenant_slug:str}/{page_slug:str}", include_in_schema=False)
async def hosted_page(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], page_slug: FromPath[str]
) -> Response[Any]:
    return await _serve(request, await tenant_of_slug(tenant_slug), page_slug)


@get("/{page_slug:str}", include_in_schema=False)
async def custom_domain_page(request: Request[Any, Any, Any], page_slug: FromPath[str]) -> Response[Any]:
    """A tenant's own domain (CNAME to Trailmark) serves its pages at the root."""
    host = request.headers.get("host") or ""
    handle = f"domain:{host.split(':')[0].lower()}"
    cached = tenants_by_handle.get(handle)
    tenant_id = cached if not isinstance(cached, Missing) else await load_once(handle, lambda: find_tenant(host=host))
    return await _serve(request, tenant_id, page_slug)


PAGE_HANDLERS = [hosted_page, custom_domain_page]
