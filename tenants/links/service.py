"""Tracked email links: ``/l/{token}`` redirects to the link's own target (never elsewhere), records
the click, and re-identifies the browser that clicked, unless a mail scanner did.

The browser is linked in the request that proves the click (the redirect itself for our own cookie,
the code exchange for the target site's tracker), so the very next page view already belongs to the
contact; the history merge then runs in the identity queue (``link_visitor`` enqueues it).

The token is the link's random key plus an HMAC of it, so a tampered token is refused before any
lookup, and the target is read from the database, so no token can redirect anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

from crawlerdetect import CrawlerDetect
from sqlalchemy import func, text
from sqlmodel import Session, col, select

from tenants.contacts.service import get_contact
from tenants.errors import Invalid, NotFound
from tenants.identity.service import LinkOutcome, link_visitor
from tenants.isolation import get_owned, tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.models import EmailLink, Evidence, LinkClick, new_id, utcnow
from tenants.settings import get_settings
from tenants.tracking.visitors import visitor_of_browser

__all__ = [
    "CODE_PARAM",
    "Click",
    "Exchange",
    "click",
    "create_link",
    "create_links",
    "exchange_code",
    "get_link",
    "identify_from_click",
    "link_url",
    "list_links",
]

CODE_PARAM = "_tmc"
CODE_LIFETIME = timedelta(minutes=2)
MAX_BULK = 10_000
_SCANNERS = re.compile(
    r"barracuda|mimecast|proofpoint|urldefense|safelinks|symantec|messagelabs|trend ?micro|forcepoint|sophos|"
    r"fireeye|ironport|zscaler|bitdefender|avanan|checkpoint|microsoft office|ms-office|outlook-|"
    r"googleimageproxy|yahoomailproxy|headlesschrome|python-requests|python-httpx|curl/|wget|go-http-client|"
    r"okhttp|java/|libwww",
    re.IGNORECASE,
)
_crawlers = CrawlerDetect()


def _signature(key: str, secret: bytes) -> str:
    digest = hmac.new(secret, f"email-link:{key}".encode(), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode()


def _token(link_key: str) -> str:
    return f"{link_key}.{_signature(link_key, get_settings().signing_keys[0].secret)}"


def _verified_key(token: str) -> str | None:
    key, _, signature = token.partition(".")
    if not key or len(key) > 32 or not signature:
        return None
    for signing_key in get_settings().signing_keys:  # links outlive a key rotation
        if hmac.compare_digest(signature, _signature(key, signing_key.secret)):
            return key
    return None


def link_url(link: EmailLink) -> str:
    return f"{get_settings().base_url}/l/{_token(link.link_key)}"


def create_link(
    session: Session,
    *,
    contact_id: UUID,
    target_url: str,
    send_id: str | None = None,
    expires_at: datetime | None = None,
) -> EmailLink:
    """A link for one recipient of one send."""
    errors: dict[str, str] = {}
    parts = urlsplit(target_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(target_url) > 4096:
        errors["target_url"] = "must be an absolute http(s) URL"
    if send_id is not None and len(send_id) > 200:
        errors["send_id"] = "must be at most 200 characters"
    if expires_at is not None and expires_at <= utcnow():
        errors["expires_at"] = "must be in the future"
    if errors:
        raise Invalid("the link is invalid", errors)
    get_contact(session, contact_id)
    link = EmailLink(
        link_key=secrets.token_urlsafe(16),
        contact_id=contact_id,
        target_url=target_url,
        send_id=send_id,
        expires_at=expires_at,
    )
    session.add(link)
    return link


def create_links(
    session: Session, *, send_id: str | None, items: list[tuple[UUID, str]], expires_at: datetime | None = None
) -> list[EmailLink]:
    """Links for a whole send: one per (contact, target) item, all or none."""
    if not 1 <= len(items) <= MAX_BULK:
        raise Invalid("the send is invalid", {"links": f"must hold 1 to {MAX_BULK} items"})
    links = []
    for index, (contact_id, target_url) in enumerate(items):
        try:
            links.append(
                create_link(
                    session, contact_id=contact_id, target_url=target_url, send_id=send_id, expires_at=expires_at
                )
            )
        except (Invalid, NotFound) as error:
            raise Invalid("the send is invalid", {f"links[{index}]": error.message}) from None
    session.flush()
    return links


@dataclass(frozen=True)
class LinkWithClicks:
    link: EmailLink
    clicks: int
    """Clicks by people; a mail scanner's are not counted."""


def get_link(session: Session, link_id: UUID) -> EmailLink:
    return get_owned(session, EmailLink, link_id, "link")


def list_links(session: Session, *, send_id: str | None = None, limit: int = MAX_BULK) -> list[LinkWithClicks]:
    """The newest links (of one send, when given) with how often people clicked each."""
    clicks = (
        select(LinkClick.link_id, func.count().label("clicks"))
        .where(LinkClick.identifies == True)  # noqa: E712
        .group_by(col(LinkClick.link_id))
        .subquery()
    )
    query = (
        select(EmailLink, func.coalesce(clicks.c.clicks, 0))
        .outerjoin(clicks, clicks.c.link_id == EmailLink.id)
        .order_by(col(EmailLink.created_at).desc(), col(EmailLink.id))
        .limit(limit)
    )
    if send_id is not None:
        query = query.where(EmailLink.send_id == send_id)
    return [LinkWithClicks(link, int(count)) for link, count in session.exec(query)]


@dataclass(frozen=True)
class Click:
    redirect_to: str
    identifies: bool
    reason: str | None
    visitor_token: str | None
    """For the browser's cookie on our own domain (same-site flows), when it should be set."""


def scanner_reason(method: str, user_agent: str | None, link_age: timedelta) -> str | None:
    """Why a click is a mail scanner's and must not identify anyone, or None."""
    if method.upper() == "HEAD":
        return "HEAD request"
    if not user_agent:
        return "no user agent"
    if _SCANNERS.search(user_agent) or _crawlers.isCrawler(user_agent):
        return "known scanner"
    if link_age < timedelta(seconds=get_settings().scanner_grace_seconds):
        return "clicked within seconds of sending"
    return None


def click(token: str, *, method: str, user_agent: str | None, cookie_token: str | None) -> Click:
    """Resolve a click: where to redirect, and (in the same transaction) the click record and the
    re-identification task. Raises :class:`NotFound` for a bad, unknown or expired token."""
    key = _verified_key(token)
    tenant_id = tenant_of_public_key("link", key) if key else None
    if key is None or tenant_id is None:
        raise NotFound("this link is not valid")
    with tenant_session(tenant_id) as session:
        link = session.exec(select(EmailLink).where(EmailLink.link_key == key)).first()
        now = utcnow()
        if link is None or (link.expires_at is not None and link.expires_at <= now):
            raise NotFound("this link has expired")
        reason = scanner_reason(method, user_agent, now - link.created_at)
        record = LinkClick(
            link_id=link.id,
            contact_id=link.contact_id,
            identifies=reason is None,
            reason=reason,
            user_agent=(user_agent or "")[:1000] or None,
        )
        target = link.target_url
        visitor_token = None
        if reason is None:
            # Our own cookie (hosted pages seen before on this device): that browser is identified too.
            browser = visitor_of_browser(tenant_id, cookie_token, first_hit=(new_id(), int(now.timestamp() * 1000)))
            if not browser.is_new:
                record.visitor_id = browser.visitor_id
                visitor_token = browser.token
            # The target site's tracker cannot read our cookie: it gets a one-time code to exchange.
            code = secrets.token_urlsafe(24)
            record.exchange_code_hash = hashlib.sha256(code.encode()).hexdigest()
            target = _with_param(target, CODE_PARAM, code)
        session.add(record)
        session.flush()
        if record.visitor_id is not None:
            identify_from_click(session, record, record.visitor_id, site_id=None)
        return Click(redirect_to=target, identifies=reason is None, reason=reason, visitor_token=visitor_token)


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name] + [(name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class Exchange:
    visitor_token: str
    visitor_id: UUID
    reissued: bool
    """The browser should store ``visitor_token`` (a new visitor, or a token of an older key)."""


def exchange_code(
    code: str, *, tenant_id: UUID, site_id: UUID, visitor_tokens: tuple[str | None, ...]
) -> Exchange | None:
    """The tracker on the target page trades the one-time code for identification of its own browser
    (the first genuine token: our cookie on hosted pages, then the one the tracker holds; else a new
    visitor). Single use, two minutes; None if not valid."""
    code_hash = hashlib.sha256(code.encode()).hexdigest() if 0 < len(code) <= 64 else ""
    if not code_hash or tenant_of_public_key("click_code", code_hash) != tenant_id:
        return None
    with tenant_session(tenant_id) as session:
        row = session.execute(
            text(
                """UPDATE link_clicks SET exchanged_at = now()
                   WHERE exchange_code_hash = :h AND exchanged_at IS NULL AND created_at > now() - :life
                   RETURNING id"""
            ),
            {"h": code_hash, "life": CODE_LIFETIME},
        ).first()
        record = session.get(LinkClick, (tenant_id, row[0])) if row else None
        if record is None:
            return None
        browser = visitor_of_browser(tenant_id, *visitor_tokens, first_hit=(new_id(), int(utcnow().timestamp() * 1000)))
        identify_from_click(session, record, browser.visitor_id, site_id=site_id)
        return Exchange(browser.token, browser.visitor_id, browser.reissued)


def identify_from_click(session: Session, record: LinkClick, visitor_id: UUID, *, site_id: UUID | None) -> LinkOutcome:
    """Link the clicking browser to the link's contact by the rules (evidence: email click; a device
    with a live login is never re-pointed); its history merge is queued."""
    record.visitor_id = visitor_id
    session.add(record)
    return link_visitor(
        session,
        visitor_id=visitor_id,
        contact_id=record.contact_id,
        evidence=Evidence.EMAIL_CLICK,
        site_id=site_id,
        detail={"click_id": str(record.id), "link_id": str(record.link_id)},
    )
