"""Serving a hosted page to a browser: who is looking (level, contact, login), and what they get.

A page view is on every visitor's path, so what it needs is cached per process for a few seconds:
the tenant behind a slug or domain, the page with its forms and tracker key, and, for identified
visitors, who they are. A warm view by an identified visitor reads no database. Changes elsewhere
show within a few seconds (``tenants.pages.cache``); a change made through this process shows at once.
Anonymous visitors are never cached as such, so a browser that just identified (a form, a link, a
login) sees its new blocks on the very next page (``tenants.identity.cache``).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session, select

from tenants.cache import Missing, TTLCache
from tenants.contacts.service import sensitive_fields
from tenants.identity.cache import identities
from tenants.identity.service import Level
from tenants.isolation import tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.memberships.sessions import MemberSession
from tenants.models import Contact, Form, Page, Site, Tenant
from tenants.pages.cache import pages
from tenants.pages.service import PageView, Viewer, login_path, page_allows, page_view

__all__ = [
    "PageBundle",
    "PageResult",
    "bundle_of",
    "find_tenant",
    "load_bundle",
    "load_contact",
    "page_result",
    "tenants_by_handle",
    "viewer_of",
]


@dataclass(frozen=True)
class PageResult:
    """What a page view answers: the page (200), where to go first (303), or why not (403, 404)."""

    status: int
    view: PageView | None = None
    location: str | None = None
    needed: str | None = None
    """For a 403: what the viewer needs to do first ("log in", "be identified")."""


@dataclass(frozen=True)
class PageBundle:
    """Everything a page needs besides its viewer."""

    page: Page
    forms: dict[str, Form]
    tenant_slug: str
    tracker_site_key: str | None
    sensitive_fields: frozenset[str]


tenants_by_handle: TTLCache[str, UUID | None] = TTLCache(30.0)


def find_tenant(*, slug: str | None = None, host: str | None = None) -> UUID | None:
    """The tenant behind a hosted-pages slug or a custom domain (cached, misses too)."""
    kind, key = ("tenant_slug", slug) if slug is not None else ("domain", (host or "").split(":")[0].lower())
    cached = tenants_by_handle.get(f"{kind}:{key}")
    if not isinstance(cached, Missing):
        return cached
    return tenants_by_handle.put(f"{kind}:{key}", tenant_of_public_key(kind, key))  # type: ignore[arg-type]


def load_bundle(tenant_id: UUID, page_slug: str) -> PageBundle | None:
    """The page, its forms, the hosted-pages tracker key and the sensitive fields (cached)."""
    cached = pages.get((tenant_id, page_slug))
    if not isinstance(cached, Missing):
        return cached
    with tenant_session(tenant_id) as session:
        page = session.exec(select(Page).where(Page.slug == page_slug)).first()
        if page is None:
            return pages.put((tenant_id, page_slug), None)
        return pages.put((tenant_id, page_slug), bundle_of(session, tenant_id, page))


def bundle_of(session: Session, tenant_id: UUID, page: Page) -> PageBundle:
    """What ``page`` needs besides its viewer, read in ``session`` (uncached: a saved page goes through
    :func:`load_bundle`; the dashboard's preview passes an unsaved draft)."""
    form_ids = [UUID(b["form_id"]) for b in page.blocks if b["kind"] == "form"]
    forms = {str(f.id): f for f in session.exec(select(Form).where(Form.id.in_(form_ids)))} if form_ids else {}  # type: ignore[attr-defined]
    tenant = session.get(Tenant, tenant_id)
    site_key = session.exec(select(Site.site_key).where(Site.hosted == True)).first()  # noqa: E712
    return PageBundle(
        page=page,
        forms=forms,
        tenant_slug=tenant.slug if tenant else "",
        tracker_site_key=site_key,
        sensitive_fields=sensitive_fields(session),
    )


def load_contact(
    tenant_id: UUID, *, visitor_id: UUID | None, contact_id: UUID | None
) -> tuple[Contact, str | None] | None:
    """The contact a visitor is linked to (or the given contact, for a login), with the evidence;
    cached only when there is one."""
    key = (tenant_id, contact_id or visitor_id)
    if key[1] is None:
        return None
    cached = identities.get(key)  # type: ignore[arg-type]
    if isinstance(cached, tuple):
        return cached
    with tenant_session(tenant_id) as session:
        if contact_id is not None:
            contact = session.get(Contact, (tenant_id, contact_id))
            found = (contact, "login") if contact else None
        else:
            row = session.execute(
                text(
                    """SELECT c.id, v.evidence FROM visitors v JOIN contacts c
                       ON c.tenant_id = v.tenant_id AND c.id = v.contact_id
                       WHERE v.tenant_id = :t AND v.id = :v"""
                ),
                {"t": tenant_id, "v": visitor_id},
            ).first()
            contact = session.get(Contact, (tenant_id, row[0])) if row else None
            found = (contact, row[1]) if contact and row else None
    return identities.put(key, found) if found else None  # type: ignore[arg-type]


def viewer_of(bundle: PageBundle, member: MemberSession | None, identity: tuple[Contact, str | None] | None) -> Viewer:
    if member is not None and identity is not None:
        return Viewer(Level.LOGGED_IN.value, identity[0], UUID(member.membership_site_id), bundle.sensitive_fields)
    if identity is not None:
        return Viewer(Level.IDENTIFIED.value, identity[0], None, bundle.sensitive_fields)
    return Viewer(Level.ANONYMOUS.value, None, None, bundle.sensitive_fields)


def page_result(bundle: PageBundle | None, viewer: Viewer, *, path: str) -> PageResult:
    """The page for this viewer, or where to send a viewer who may not see it yet."""
    if bundle is None:
        return PageResult(404)
    page = bundle.page
    if not page_allows(page, viewer):
        if page.redirect_to:
            return PageResult(303, location=page.redirect_to)
        if page.membership_site_id is not None:
            return PageResult(303, location=login_path(bundle.tenant_slug, page.membership_site_id, path))
        needed = "log in" if page.access_level == Level.LOGGED_IN.value else "be identified"
        return PageResult(403, needed=needed)
    return PageResult(200, view=page_view(page, viewer, forms=bundle.forms))
