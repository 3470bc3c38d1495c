"""Serving a hosted page to a browser: who is looking (level, contact, login), and what they get."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlmodel import select

from tenants.contacts.service import sensitive_fields
from tenants.identity.service import Level, resolve
from tenants.isolation import tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.memberships.sessions import read_session
from tenants.models import Contact, Form, Page, Tenant, new_id, utcnow
from tenants.pages.service import Viewer, hosted_site, login_path, page_allows, render_page
from tenants.tracking.visitors import visitor_of_browser

__all__ = ["PageResult", "find_tenant", "serve_page", "viewer_of"]


@dataclass(frozen=True)
class PageResult:
    status: int
    html: str | None = None
    location: str | None = None
    visitor_token: str | None = None
    """Set when the browser should get (or refresh) its server-set visitor cookie."""


def find_tenant(*, slug: str | None = None, host: str | None = None) -> UUID | None:
    if slug is not None:
        return tenant_of_public_key("tenant_slug", slug)
    return tenant_of_public_key("domain", (host or "").split(":")[0].lower())


def viewer_of(tenant_id: UUID, session_cookie: str | None, visitor_token: str | None) -> Viewer:
    """The identification level of a request (``tenants.identity.service.resolve``) and its contact."""
    member = read_session(tenant_id, session_cookie)
    with tenant_session(tenant_id) as session:
        resolution = resolve(
            session, visitor_token=visitor_token, member_contact_id=UUID(member.contact_id) if member else None
        )
        contact = session.get(Contact, (tenant_id, resolution.contact_id)) if resolution.contact_id else None
        return Viewer(
            level=resolution.level.value,
            contact=contact,
            membership_site_id=UUID(member.membership_site_id) if member else None,
            sensitive_fields=sensitive_fields(session) if contact else frozenset(),
        )


def serve_page(
    tenant_id: UUID,
    page_slug: str,
    *,
    path: str,
    session_cookie: str | None,
    visitor_cookie: str | None,
    base_url: str,
    own_origin: str,
) -> PageResult:
    """Render the page for this browser, or send it where it may log in (and come back)."""
    now_ms = int(utcnow().timestamp() * 1000)
    browser = visitor_of_browser(tenant_id, visitor_cookie, first_hit=(new_id(), now_ms))
    viewer = viewer_of(tenant_id, session_cookie, browser.token)
    with tenant_session(tenant_id) as session:
        page = session.exec(select(Page).where(Page.slug == page_slug)).first()
        if page is None:
            return PageResult(404, html="<!doctype html><title>Not found</title><h1>This page does not exist.</h1>")
        refreshed = browser.token if browser.reissued else None
        if not page_allows(page, viewer):
            if page.redirect_to:
                return PageResult(303, location=page.redirect_to, visitor_token=refreshed)
            if page.membership_site_id is not None:
                tenant = session.get(Tenant, tenant_id)
                assert tenant is not None
                return PageResult(
                    303, location=login_path(tenant.slug, page.membership_site_id, path), visitor_token=refreshed
                )
            needed = "log in" if page.access_level == Level.LOGGED_IN.value else "be identified"
            return PageResult(
                403, html=f"<!doctype html><title>Not allowed</title><h1>You need to {needed} to see this page.</h1>"
            )
        form_ids = [UUID(b["form_id"]) for b in page.blocks if b["kind"] == "form"]
        forms = {str(f.id): f for f in session.exec(select(Form).where(Form.id.in_(form_ids)))} if form_ids else {}  # type: ignore[attr-defined]
        site = hosted_site(session, own_origin)
        body = render_page(page, viewer, forms=forms, base_url=base_url, tracker_site_key=site.site_key)
        return PageResult(200, html=body, visitor_token=refreshed)
