"""Hosted pages: ordered blocks, each visible to some identification levels, with merge fields.

Tenant HTML is cleaned by ``nh3`` when saved and never compiled as a template: merge fields such as
``{{contact.first_name|there}}`` are replaced by plain substitution of HTML-escaped values. What a viewer
sees is a :class:`PageView` of data; ``api.pages.rendering`` turns it into HTML with the app's templates. Fields that
are sensitive (email, phone, custom fields flagged sensitive) are filled only for a logged-in member,
whatever the block says; anyone else gets the default.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit
from uuid import UUID

import nh3
from sqlmodel import Session, col, select

from tenants.accounts.service import SLUG_PATTERN
from tenants.contacts.service import SENSITIVE_CORE_FIELDS
from tenants.errors import Conflict, Invalid
from tenants.identity.service import Level
from tenants.isolation import current_tenant_id, get_owned
from tenants.models import Contact, Form, MembershipSite, Page, Site, utcnow
from tenants.pages.cache import forget_page_after_commit
from tenants.settings import get_settings
from tenants.tracking.origins import normalize_origin
from tenants.tracking.sites import create_site

__all__ = [
    "LEVELS",
    "BlockView",
    "PageView",
    "Viewer",
    "create_page",
    "delete_page",
    "draft_page",
    "ensure_hosted_site",
    "get_page",
    "list_pages",
    "login_path",
    "page_allows",
    "page_view",
    "safe_next",
    "update_page",
]

LEVELS = (Level.ANONYMOUS.value, Level.IDENTIFIED.value, Level.LOGGED_IN.value)
_RANK = {level: index for index, level in enumerate(LEVELS)}
BLOCK_KINDS = ("html", "form", "link")
URL_SCHEMES = {"http", "https", "mailto"}
MERGE_FIELD = re.compile(r"\{\{\s*contact\.([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)?)\s*(?:\|([^{}]*))?\}\}")
HOSTED_SITE_NAME = "Hosted pages"


def _safe_url(url: str) -> bool:
    """http(s), mailto, or a path on this site; never javascript:, data: or another scheme."""
    stripped = url.strip()
    if stripped.startswith("/") and not stripped.startswith("//"):
        return True
    try:
        return urlsplit(stripped).scheme.lower() in URL_SCHEMES
    except ValueError:  # e.g. an unbalanced [ in the host: not a URL we can check, so not safe
        return False


def _clean_blocks(session: Session, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors: dict[str, str] = {}
    clean: list[dict[str, Any]] = []
    forms = {str(f.id) for f in session.exec(select(Form))}
    sites = {str(s.id) for s in session.exec(select(MembershipSite))}
    for index, raw in enumerate(blocks):
        where = f"blocks[{index}]"
        kind = raw.get("kind")
        visible_to = raw.get("visible_to") or list(LEVELS)
        block: dict[str, Any] = {"id": str(raw.get("id") or secrets.token_hex(4)), "kind": kind}
        if kind not in BLOCK_KINDS:
            errors[f"{where}.kind"] = f"must be one of {list(BLOCK_KINDS)}"
            continue
        if not isinstance(visible_to, list) or not visible_to or not set(visible_to) <= set(LEVELS):
            errors[f"{where}.visible_to"] = f"must be a non-empty list of {list(LEVELS)}"
        block["visible_to"] = [level for level in LEVELS if level in visible_to]
        membership_site = raw.get("membership_site_id")
        if membership_site is not None and str(membership_site) not in sites:
            errors[f"{where}.membership_site_id"] = "no such membership site"
        block["membership_site_id"] = str(membership_site) if membership_site else None
        if kind == "html":
            source = str(raw.get("html") or "")
            if re.search(r"(?i)(href|src)\s*=\s*[\"']?\s*(javascript|data|vbscript):", source):
                errors[f"{where}.html"] = "javascript:, data: and vbscript: URLs are not allowed"
            block["html"] = nh3.clean(source, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer")
        elif kind == "form":
            if str(raw.get("form_id")) not in forms:
                errors[f"{where}.form_id"] = "no such form"
            block["form_id"] = str(raw.get("form_id"))
        else:
            url, label = str(raw.get("url") or ""), str(raw.get("text") or "")
            if not url or not _safe_url(url) or len(url) > 4096:
                errors[f"{where}.url"] = (
                    "must be an http(s) or mailto URL, or a path; javascript: and data: are refused"
                )
            block["url"], block["text"] = url.strip(), label[:500]
        clean.append(block)
    if errors:
        raise Invalid("the page is invalid", errors)
    return clean


def _validated(
    session: Session,
    *,
    slug: str | None,
    title: str | None,
    access_level: str | None,
    membership_site_id: UUID | None,
    redirect_to: str | None,
    meta: dict[str, str] | None,
) -> dict[str, Any]:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if slug is not None:
        if not SLUG_PATTERN.match(slug) or len(slug) > 100:
            errors["slug"] = "must be lowercase letters, digits and dashes"
        values["slug"] = slug
    if title is not None:
        if not 1 <= len(title.strip()) <= 300:
            errors["title"] = "must be 1 to 300 characters"
        values["title"] = title.strip()
    if access_level is not None:
        if access_level not in LEVELS:
            errors["access_level"] = f"must be one of {list(LEVELS)}"
        values["access_level"] = access_level
    if membership_site_id is not None:
        if session.get(MembershipSite, (current_tenant_id(session), membership_site_id)) is None:
            errors["membership_site_id"] = "no such membership site"
        values["membership_site_id"] = membership_site_id
    if redirect_to is not None:
        if redirect_to and not _safe_url(redirect_to):
            errors["redirect_to"] = "must be an http(s) URL or a path"
        values["redirect_to"] = redirect_to or None
    if meta is not None:
        values["meta"] = {
            str(k)[:50]: str(v)[:500] for k, v in meta.items() if k in ("description", "robots", "og:image")
        }
    if errors:
        raise Invalid("the page is invalid", errors)
    return values


def create_page(
    session: Session,
    *,
    slug: str,
    title: str,
    blocks: list[dict[str, Any]],
    access_level: str = "anonymous",
    membership_site_id: UUID | None = None,
    redirect_to: str | None = None,
    meta: dict[str, str] | None = None,
) -> Page:
    values = _validated(
        session,
        slug=slug,
        title=title,
        access_level=access_level,
        membership_site_id=membership_site_id,
        redirect_to=redirect_to,
        meta=meta or {},
    )
    if session.exec(select(Page).where(Page.slug == slug)).first() is not None:
        raise Conflict(f"a page with the slug {slug!r} exists")
    ensure_hosted_site(session)
    page = Page(blocks=_clean_blocks(session, blocks), **values)
    session.add(page)
    session.flush()
    forget_page_after_commit(session, page.tenant_id, page.slug)  # a view just before may have cached "no page"
    return page


def get_page(session: Session, page_id: UUID) -> Page:
    return get_owned(session, Page, page_id, "page")


def list_pages(session: Session) -> list[Page]:
    return list(session.exec(select(Page).order_by(col(Page.slug))))


def update_page(
    session: Session,
    page_id: UUID,
    *,
    title: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    access_level: str | None = None,
    membership_site_id: UUID | None = None,
    redirect_to: str | None = None,
    meta: dict[str, str] | None = None,
) -> Page:
    page = get_page(session, page_id)
    values = _validated(
        session,
        slug=None,
        title=title,
        access_level=access_level,
        membership_site_id=membership_site_id,
        redirect_to=redirect_to,
        meta=meta,
    )
    for name, value in values.items():
        setattr(page, name, value)
    if blocks is not None:
        page.blocks = _clean_blocks(session, blocks)
    page.updated_at = utcnow()
    session.add(page)
    session.flush()
    forget_page_after_commit(session, page.tenant_id, page.slug)
    return page


def draft_page(
    session: Session,
    page_id: UUID,
    *,
    title: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    access_level: str | None = None,
) -> Page:
    """The page as :func:`update_page` would save it, never saved: for previewing unsaved edits. The same
    rules apply (an invalid draft raises :class:`Invalid`)."""
    saved = get_page(session, page_id)
    values = _validated(
        session,
        slug=None,
        title=title,
        access_level=access_level,
        membership_site_id=None,
        redirect_to=None,
        meta=None,
    )
    return Page(
        tenant_id=saved.tenant_id,
        id=saved.id,
        slug=saved.slug,
        title=values.get("title", saved.title),
        meta=dict(saved.meta),
        access_level=values.get("access_level", saved.access_level),
        membership_site_id=saved.membership_site_id,
        redirect_to=saved.redirect_to,
        blocks=_clean_blocks(session, blocks) if blocks is not None else list(saved.blocks),
    )


def delete_page(session: Session, page_id: UUID) -> None:
    page = get_page(session, page_id)
    session.delete(page)
    forget_page_after_commit(session, page.tenant_id, page.slug)


def ensure_hosted_site(session: Session) -> Site:
    """The tenant's site for its hosted pages (made with the first page): their tracker reports to it,
    from our own origin."""
    site = session.exec(select(Site).where(Site.hosted == True)).first()  # noqa: E712
    own_origin = normalize_origin(get_settings().base_url)
    assert own_origin is not None
    if site is None:
        site = create_site(session, name=HOSTED_SITE_NAME, allowed_origins=[own_origin])
        site.hosted = True
        session.add(site)
    elif own_origin not in site.allowed_origins:  # the public URL changed
        site.allowed_origins = [*site.allowed_origins, own_origin]
        session.add(site)
    return site


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page."""

    level: str
    contact: Contact | None
    membership_site_id: UUID | None
    """The membership site of the viewer's login, when logged in."""
    sensitive_fields: frozenset[str] = SENSITIVE_CORE_FIELDS


def page_allows(page: Page, viewer: Viewer) -> bool:
    if _RANK[viewer.level] < _RANK[page.access_level]:
        return False
    return not (
        page.access_level == Level.LOGGED_IN.value
        and page.membership_site_id is not None
        and page.membership_site_id != viewer.membership_site_id
    )


def login_path(tenant_slug: str, membership_site_id: UUID, back_to: str) -> str:
    return f"/s/{tenant_slug}/m/{membership_site_id}/login?next={quote(back_to, safe='/')}"


def safe_next(tenant_slug: str, value: str | None) -> str | None:
    """Only a path of this tenant's hosted pages may be a post-login destination (no open redirect)."""
    if not value or not value.startswith(f"/s/{tenant_slug}/") or "//" in value or "\\" in value:
        return None
    return value


def _field_value(contact: Contact | None, name: str, viewer: Viewer) -> str | None:
    if contact is None:
        return None
    if viewer.level != Level.LOGGED_IN.value and name in viewer.sensitive_fields:
        return None  # identified can be wrong: personal data needs a login
    if name.startswith("custom."):
        value = contact.custom.get(name[7:])
    else:
        value = getattr(contact, name, None) if name in ("email", "first_name", "last_name", "phone") else None
    return None if value in (None, "") else str(value)


def fill_merge_fields(text: str, viewer: Viewer) -> str:
    """Replace ``{{contact.field|default}}`` by the escaped value (or the escaped default)."""

    def replace(match: re.Match[str]) -> str:
        value = _field_value(viewer.contact, match.group(1), viewer)
        return html.escape(value if value is not None else (match.group(2) or "").strip())

    return MERGE_FIELD.sub(replace, text)


def _visible(block: dict[str, Any], viewer: Viewer) -> bool:
    if viewer.level not in block["visible_to"]:
        return False
    site = block.get("membership_site_id")
    return site is None or (viewer.membership_site_id is not None and str(viewer.membership_site_id) == site)


@dataclass(frozen=True)
class BlockView:
    """One block as a viewer sees it."""

    id: str
    kind: str
    html: str = ""
    """HTML safe to insert as is: an html block's sanitised source, or a link's escaped text, with merge fields
    filled by escaped values."""
    url: str = ""
    form: Form | None = None


@dataclass(frozen=True)
class PageView:
    """What one viewer sees of a page."""

    title_html: str
    """The escaped title with its merge fields filled (escaped too)."""
    meta: list[tuple[str, str]]
    level: str
    blocks: list[BlockView]


def page_view(page: Page, viewer: Viewer, *, forms: dict[str, Form]) -> PageView:
    """The blocks this viewer may see, in order, with merge fields filled as escaped data; a form block whose
    form is gone is left out."""
    blocks: list[BlockView] = []
    for block in page.blocks:
        if not _visible(block, viewer):
            continue
        if block["kind"] == "html":
            blocks.append(BlockView(block["id"], "html", html=fill_merge_fields(block["html"], viewer)))
        elif block["kind"] == "form":
            form = forms.get(block["form_id"])
            if form is not None:
                blocks.append(BlockView(block["id"], "form", form=form))
        else:
            text = fill_merge_fields(html.escape(block["text"]), viewer)
            blocks.append(BlockView(block["id"], "link", html=text, url=block["url"]))
    return PageView(
        title_html=fill_merge_fields(html.escape(page.title), viewer),
        meta=list(page.meta.items()),
        level=viewer.level,
        blocks=blocks,
    )
