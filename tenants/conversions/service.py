"""Conversions: what converted, recorded once, with the touch each ad platform gets and one delivery per
integration that wants it.

The hooks are where the things happen: a form submission that creates a contact (``tenants.forms``), a
purchase (``tenants.purchases``), a membership registration (``tenants.memberships``), a tracked event that an
integration names (ingest). Each enqueues :data:`RECORD_TASK` through the outbox in its own transaction; the
task (:func:`record`) runs on the ``conversions`` queue and is idempotent: the conversion's ``source_key`` is
unique, so a redelivered hook records nothing more. A browser's page views may still wait in the ingest stream
when it runs (ingest drains every second): it first waits, up to :data:`INGEST_WAIT_SECONDS`, until every batch
received before the conversion is stored, so the converting visit and its click ids are there to be read.

Which touch a platform gets (:func:`choose_touch`): the converting visit's click ids, else the contact's most
recent visit with that platform's ids within the platform's click window, else the first touch.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session, col, select

from tenants.conversions import consent
from tenants.conversions.integrations import wants
from tenants.errors import Invalid
from tenants.isolation import current_tenant_id
from tenants.models import (
    Contact,
    Conversion,
    ConversionDelivery,
    ConversionKind,
    DeliveryStatus,
    FormSubmission,
    Integration,
    Member,
    Platform,
    Purchase,
    Site,
    Visitor,
    new_id,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.redis_store import REDIS_UNAVAILABLE, get_ingest_redis
from tenants.settings import get_settings
from tenants.tracking.buffer import holds_entries_until

__all__ = [
    "CLICK_WINDOWS",
    "FLUSH_TASK",
    "MAX_PAGE",
    "QUEUE",
    "RECORD_TASK",
    "ConversionPage",
    "choose_touch",
    "enqueue_conversion",
    "event_id_of",
    "list_conversions",
    "record",
]

log = logging.getLogger(__name__)

RECORD_TASK = "trailmark.conversions.record"
FLUSH_TASK = "trailmark.conversions.flush"
QUEUE = "conversions"
MAX_PAGE = 200
CLICK_WINDOWS = {
    Platform.META: timedelta(days=7),
    Platform.GOOGLE_ADS: timedelta(days=90),
    Platform.TIKTOK: timedelta(days=7),
    Platform.LINKEDIN: timedelta(days=30),
}
"""How old a click may be and still be credited: Meta and TikTok's default 7-day click windows, Google Ads' 90
days (the longest conversion window an action can have), LinkedIn's default 30-day click-through window."""
CLICK_KEYS: dict[Platform, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Platform.META: (("fbclid",), ("_fbc",)),
    Platform.GOOGLE_ADS: (("gclid", "gbraid", "wbraid"), ()),
    Platform.TIKTOK: (("ttclid",), ()),
    Platform.LINKEDIN: (("li_fat_id",), ()),
}
"""Each platform's click ids from the landing URL, and the cookies that carry a click (Meta's ``_fbc``): what
a touch is chosen by."""
BROWSER_COOKIES: dict[Platform, tuple[str, ...]] = {
    Platform.META: ("_fbp",),
    Platform.GOOGLE_ADS: (),
    Platform.TIKTOK: ("_ttp",),
    Platform.LINKEDIN: (),
}
"""Cookies that name the browser, not a click: taken from the converting visit only, never from another."""
INGEST_WAIT_SECONDS = 10.0
"""At most this long a conversion waits for the page views received before it to be stored (an ingest backlog
makes it wait the whole time, then it goes on with what is stored)."""
CLOCK_SKEW = timedelta(minutes=1)
"""A browser's clock may run ahead of the server's: its visit just before a conversion may look just after."""
_EVENT_NAMESPACE = uuid.UUID("6f1a3c1e-2b7d-4f5e-9a51-7c0e9d3b8a42")


def event_id_of(tenant_id: UUID, source_key: str) -> str:
    """The conversion's event id: the same for the same (tenant, conversion) wherever it is computed."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{tenant_id}:{source_key}").hex


def enqueue_conversion(session: Session, kind: ConversionKind, subject_id: str | UUID) -> None:
    """Called by the hooks in the transaction of what converted: :func:`record` follows once it commits."""
    outbox.enqueue(session, RECORD_TASK, kind.value, str(subject_id), queue=QUEUE)


@dataclass(frozen=True)
class _Facts:
    """What converted, as its hook's row tells it."""

    source_key: str
    event_name: str
    contact_id: UUID | None
    visitor_id: UUID | None
    site_id: UUID | None
    occurred_at: datetime
    hit_id: UUID | None = None
    value: int | None = None
    currency: str | None = None
    order_id: str | None = None
    items: tuple[dict[str, Any], ...] = ()
    page_url: str | None = None
    in_browser: bool = True
    """Made in ``visitor_id``'s browser; False when that browser is only the contact's latest, taken for its
    click ids (a purchase reported by the shop's server, a registration): consent is then the contact's."""


def _event_facts(session: Session, subject_id: str) -> _Facts | None:
    row = session.execute(
        text(
            """SELECT hit_id, event_name, contact_id, visitor_id, site_id, occurred_at, url FROM visits
               WHERE tenant_id = :t AND hit_id = :h ORDER BY occurred_at LIMIT 1"""
        ),
        {"t": current_tenant_id(session), "h": subject_id},
    ).first()
    if row is None:
        return None
    contact_id = row.contact_id or _contact_of(session, row.visitor_id)
    return _Facts(
        f"visit:{row.hit_id}", row.event_name or "event", contact_id, row.visitor_id, row.site_id,
        row.occurred_at, hit_id=row.hit_id, page_url=row.url,
    )  # fmt: skip


def _lead_facts(session: Session, subject_id: str) -> _Facts | None:
    tenant_id = current_tenant_id(session)
    submission = session.get(FormSubmission, (tenant_id, UUID(subject_id)))
    if submission is None:
        return None
    site_id = session.execute(
        text("SELECT site_id FROM forms WHERE tenant_id = :t AND id = :f"), {"t": tenant_id, "f": submission.form_id}
    ).scalar()
    return _Facts(
        f"form_submission:{submission.id}", ConversionKind.LEAD.value, submission.contact_id, submission.visitor_id,
        site_id, submission.created_at, page_url=submission.page_url,
    )  # fmt: skip


def _purchase_facts(session: Session, subject_id: str) -> _Facts | None:
    purchase = session.get(Purchase, (current_tenant_id(session), UUID(subject_id)))
    if purchase is None:
        return None
    visitor_id = purchase.visitor_id or _latest_visitor(session, purchase.contact_id)
    return _Facts(
        f"purchase:{purchase.id}", ConversionKind.PURCHASE.value, purchase.contact_id, visitor_id,
        _site_of(session, visitor_id), purchase.occurred_at, value=purchase.amount, currency=purchase.currency,
        order_id=purchase.external_id, items=tuple(purchase.items), in_browser=purchase.visitor_id is not None,
    )  # fmt: skip


def _registration_facts(session: Session, subject_id: str) -> _Facts | None:
    member = session.get(Member, (current_tenant_id(session), UUID(subject_id)))
    if member is None:
        return None
    visitor_id = _latest_visitor(session, member.contact_id)
    return _Facts(
        f"member:{member.id}", ConversionKind.COMPLETE_REGISTRATION.value, member.contact_id, visitor_id,
        _site_of(session, visitor_id), member.password_changed_at or member.created_at, in_browser=False,
    )  # fmt: skip


_FACTS = {
    ConversionKind.CUSTOM: _event_facts,
    ConversionKind.LEAD: _lead_facts,
    ConversionKind.PURCHASE: _purchase_facts,
    ConversionKind.COMPLETE_REGISTRATION: _registration_facts,
}
"""What converted, read from its hook's row (None when it is gone)."""


def _contact_of(session: Session, visitor_id: UUID | None) -> UUID | None:
    visitor = session.get(Visitor, (current_tenant_id(session), visitor_id)) if visitor_id else None
    return visitor.contact_id if visitor else None


def _latest_visitor(session: Session, contact_id: UUID) -> UUID | None:
    """The contact's browser seen last: a conversion reported without one (a purchase from the shop's server,
    a registration) happened there, most likely."""
    return session.execute(
        text(
            """SELECT id FROM visitors WHERE tenant_id = :t AND contact_id = :c
               ORDER BY last_seen_at DESC, id DESC LIMIT 1"""
        ),
        {"t": current_tenant_id(session), "c": contact_id},
    ).scalar()


def _site_of(session: Session, visitor_id: UUID | None) -> UUID | None:
    visitor = session.get(Visitor, (current_tenant_id(session), visitor_id)) if visitor_id else None
    return visitor.site_id if visitor else None


_OF_CONTACT = (
    """(contact_id = :c OR visitor_id IN (SELECT id FROM visitors WHERE tenant_id = :t AND contact_id = :c))"""
)
"""Visits of the contact, including those of its browsers whose history merge has not run yet."""
_VISIT_COLUMNS = "hit_id, occurred_at, url, click_ids, ad_cookies, host(ip) AS ip, user_agent"


def _converting_visit(session: Session, facts: _Facts) -> Any:
    """The visit the conversion happened on: the tracked event itself, else the browser's last visit before."""
    params = {"t": current_tenant_id(session), "v": facts.visitor_id, "at": facts.occurred_at + CLOCK_SKEW}
    if facts.hit_id is not None:
        return session.execute(
            text(f"SELECT {_VISIT_COLUMNS} FROM visits WHERE tenant_id = :t AND hit_id = :h LIMIT 1"),  # noqa: S608 - fixed columns
            {**params, "h": facts.hit_id},
        ).first()
    if facts.visitor_id is None:
        return None
    return session.execute(
        text(
            f"""SELECT {_VISIT_COLUMNS} FROM visits
                WHERE tenant_id = :t AND visitor_id = :v AND occurred_at <= :at AND NOT is_bot
                ORDER BY occurred_at DESC, hit_id DESC LIMIT 1"""  # noqa: S608 - fixed columns
        ),
        params,
    ).first()


def _platform_part(platform: Platform, click_ids: dict[str, Any], cookies: dict[str, Any]) -> tuple[dict, dict]:
    ids, cookie_names = CLICK_KEYS[platform]
    return (
        {k: v for k, v in click_ids.items() if k in ids and isinstance(v, str) and v},
        {k: v for k, v in cookies.items() if k in cookie_names and isinstance(v, str) and v},
    )


def _touch_of_visit(platform: Platform, visit: Any, source: str) -> dict[str, Any] | None:
    click_ids, cookies = _platform_part(platform, dict(visit.click_ids or {}), dict(visit.ad_cookies or {}))
    if not click_ids and not cookies:
        return None
    at = visit.occurred_at.isoformat()
    return {
        "source": source,
        "hit_id": str(visit.hit_id),
        "at": at,
        "click_ids": click_ids,
        "ad_cookies": cookies,
        "clicked_at": dict.fromkeys(click_ids, at),
    }


def choose_touch(session: Session, platform: Platform, facts: _Facts, converting: Any) -> dict[str, Any] | None:
    """The touch whose click ids ``platform`` gets (the converting visit's, else the contact's most recent visit
    with them within the platform's window, else the first touch), with the browser cookies (``_fbp``, ``_ttp``)
    of the converting visit; None when neither has anything for the platform."""
    browser = {
        k: v
        for k, v in dict((converting.ad_cookies or {}) if converting is not None else {}).items()
        if k in BROWSER_COOKIES[platform] and isinstance(v, str) and v
    }
    touch = _click_touch(session, platform, facts, converting)
    if touch is None:
        return (
            {"source": "converting_visit", "click_ids": {}, "ad_cookies": browser, "clicked_at": {}}
            if browser
            else None
        )
    touch["ad_cookies"] = {**touch["ad_cookies"], **browser}
    return touch


def _click_touch(session: Session, platform: Platform, facts: _Facts, converting: Any) -> dict[str, Any] | None:
    if converting is not None and (touch := _touch_of_visit(platform, converting, "converting_visit")):
        return _with_first_click(session, touch, facts)
    if facts.contact_id is None and facts.visitor_id is None:
        return None
    ids, cookie_names = CLICK_KEYS[platform]
    recent = session.execute(
        text(
            f"""SELECT {_VISIT_COLUMNS} FROM visits
                WHERE tenant_id = :t AND (visitor_id = :v OR {_OF_CONTACT})
                  AND occurred_at BETWEEN :since AND :at AND NOT is_bot
                  AND (click_ids ?| CAST(:ids AS text[]) OR ad_cookies ?| CAST(:cookies AS text[]))
                ORDER BY occurred_at DESC, hit_id DESC LIMIT 1"""  # noqa: S608 - fixed columns
        ),
        {
            "t": current_tenant_id(session),
            "c": facts.contact_id,
            "v": facts.visitor_id,
            "since": facts.occurred_at - CLICK_WINDOWS[platform],
            "at": facts.occurred_at + CLOCK_SKEW,
            "ids": list(ids),
            "cookies": list(cookie_names),
        },
    ).first()
    if recent is not None and (touch := _touch_of_visit(platform, recent, "recent_visit")):
        return _with_first_click(session, touch, facts)
    contact = session.get(Contact, (current_tenant_id(session), facts.contact_id)) if facts.contact_id else None
    visitor = session.get(Visitor, (current_tenant_id(session), facts.visitor_id)) if facts.visitor_id else None
    # The browser's own first touch until the history merge gave the contact one.
    first = (contact.first_touch if contact else None) or (visitor.first_touch if visitor else None) or {}
    seen = {k: v for k, v in (first.get("click_ids") or {}).items() if isinstance(v, dict)}
    click_ids, cookies = _platform_part(
        platform, {k: v.get("value") for k, v in seen.items()}, dict(first.get("ad_cookies") or {})
    )
    if not click_ids and not cookies:
        return None
    return {
        "source": "first_touch",
        "at": first.get("at"),
        "click_ids": click_ids,
        "ad_cookies": cookies,
        "clicked_at": {k: seen[k].get("seen_at") for k in click_ids},
    }


def _with_first_click(session: Session, touch: dict[str, Any], facts: _Facts) -> dict[str, Any]:
    """Meta's fbc needs when its fbclid was first seen: the earliest visit of the contact (or browser) with it."""
    fbclid = touch["click_ids"].get("fbclid")
    if fbclid and (facts.contact_id or facts.visitor_id):
        first = session.execute(
            text(
                f"""SELECT min(occurred_at) FROM visits WHERE tenant_id = :t
                   AND ({_OF_CONTACT} OR visitor_id = :v) AND click_ids->>'fbclid' = :fbclid"""  # noqa: S608
            ),
            {"t": current_tenant_id(session), "c": facts.contact_id, "v": facts.visitor_id, "fbclid": fbclid},
        ).scalar()
        if first is not None:
            touch["clicked_at"]["fbclid"] = first.isoformat()
    return touch


def _consent_refusal(session: Session, facts: _Facts) -> str | None:
    """Why this conversion must not be sent, by ``tenants.conversions.consent``'s rule: the browser it was made
    in decides alone; one reported without a browser follows the contact's browsers together."""
    site = session.get(Site, (current_tenant_id(session), facts.site_id)) if facts.site_id else None
    answer = consent.consent_for(session, facts.visitor_id if facts.in_browser else None, facts.contact_id)
    return consent.refusal(site, answer)


def _wait_for_ingest(occurred_at: datetime) -> None:
    """Until no batch received up to ``occurred_at`` waits in the ingest stream (bounded; Redis away: no wait)."""
    until_ms = int(occurred_at.timestamp() * 1000)
    deadline = time.monotonic() + INGEST_WAIT_SECONDS
    try:
        client, shards = get_ingest_redis(), get_settings().ingest_shards
        while holds_entries_until(client, until_ms, shard_count=shards) and time.monotonic() < deadline:
            time.sleep(0.1)
    except REDIS_UNAVAILABLE as error:
        log.warning("the ingest stream cannot be read (%s): recording with the visits stored", error)


def record(session: Session, kind: ConversionKind, subject_id: str) -> Conversion | None:
    """Record what converted (once per source), with each platform's touch, and queue it for every integration
    that wants it, or mark it skipped with the reason (no consent). None when already recorded or gone."""
    facts = _FACTS[kind](session, subject_id)
    if facts is None:
        return None
    integrations = [
        i
        for i in session.exec(select(Integration).order_by(col(Integration.created_at)))
        if wants(i, kind.value, facts.event_name) and i.site_id in (None, facts.site_id)
    ]
    if kind == ConversionKind.CUSTOM and not integrations:
        return None  # a tracked event converts only where an integration names it
    tenant_id = current_tenant_id(session)
    if facts.visitor_id is not None:
        _wait_for_ingest(facts.occurred_at)
    converting = _converting_visit(session, facts)
    touches = {
        p.value: touch
        for p in {Platform(i.platform) for i in integrations}
        if (touch := choose_touch(session, p, facts, converting)) is not None
    }
    conversion_id = session.execute(
        text(
            """INSERT INTO conversions (tenant_id, id, kind, event_name, source_key, event_id, contact_id, visitor_id,
                   site_id, occurred_at, value, currency, order_id, items, page_url, ip, user_agent, touches,
                   created_at)
               VALUES (:t, :id, :kind, :name, :key, :event_id, :contact, :visitor, :site, :at, :value, :currency,
                   :order_id, CAST(:items AS jsonb), :page, CAST(:ip AS inet), :ua, CAST(:touches AS jsonb), :now)
               ON CONFLICT (tenant_id, source_key) DO NOTHING RETURNING id"""
        ),
        {
            "t": tenant_id,
            "id": new_id(),
            "kind": kind.value,
            "name": facts.event_name[:100],
            "key": facts.source_key,
            # A tracked event's id is its hit id, made by the browser: trailmark('conversion', …) returns it at once,
            # for the page's own pixel to send as its event id. Hit ids are unique per tenant (the visits key).
            "event_id": facts.hit_id.hex if facts.hit_id else event_id_of(tenant_id, facts.source_key),
            "contact": facts.contact_id,
            "visitor": facts.visitor_id if facts.in_browser else None,  # the converting browser, when known
            "site": facts.site_id,
            "at": facts.occurred_at,
            "value": facts.value,
            "currency": facts.currency,
            "order_id": facts.order_id,
            "items": _json(list(facts.items)),
            "page": (converting.url if converting is not None else None) or facts.page_url,
            "ip": converting.ip if converting is not None else None,
            "ua": converting.user_agent if converting is not None else None,
            "touches": _json(touches),
            "now": utcnow(),
        },
    ).scalar()
    if conversion_id is None:
        return None  # recorded before: a redelivered hook
    refusal = _consent_refusal(session, facts)
    for integration in integrations:
        session.add(
            ConversionDelivery(
                integration_id=integration.id,
                conversion_id=conversion_id,
                status=DeliveryStatus.SKIPPED if refusal else DeliveryStatus.QUEUED,
                reason=refusal,
            )
        )
    session.flush()
    log.info(
        "conversion recorded",
        extra={"conversion": str(conversion_id), "kind": kind.value, "deliveries": len(integrations),
               "skipped": refusal is not None, "platforms_with_clicks": sorted(touches)},
    )  # fmt: skip
    return session.get(Conversion, (tenant_id, conversion_id))


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


@dataclass(frozen=True)
class ConversionPage:
    items: list[tuple[Conversion, list[tuple[ConversionDelivery, Integration]]]]
    next_cursor: str | None


def list_conversions(
    session: Session, *, contact_id: UUID | None = None, cursor: str | None = None, limit: int = 50
) -> ConversionPage:
    """Newest first, each with its delivery per integration; one keyset page at a time."""
    query = select(Conversion).order_by(col(Conversion.created_at).desc(), col(Conversion.id).desc())
    if contact_id is not None:
        query = query.where(Conversion.contact_id == contact_id)
    if cursor:
        at, last_id = _read_cursor(cursor)
        query = query.where(
            (col(Conversion.created_at) < at) | ((col(Conversion.created_at) == at) & (col(Conversion.id) < last_id))
        )
    rows = list(session.exec(query.limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    ids = [c.id for c in page]
    deliveries: dict[UUID, list[tuple[ConversionDelivery, Integration]]] = {i: [] for i in ids}
    if ids:
        joined = session.exec(
            select(ConversionDelivery, Integration)
            .join(Integration, col(Integration.id) == col(ConversionDelivery.integration_id))
            .where(col(ConversionDelivery.conversion_id).in_(ids))
            .order_by(col(Integration.created_at))
        )
        for delivery, integration in joined:
            deliveries[delivery.conversion_id].append((delivery, integration))
    next_cursor = _cursor(page[-1]) if more and page else None
    return ConversionPage([(c, deliveries[c.id]) for c in page], next_cursor)


def _cursor(conversion: Conversion) -> str:
    raw = f"{conversion.created_at.isoformat()}|{conversion.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        at, _, last = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        return datetime.fromisoformat(at), UUID(last)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the cursor is not one this API returned", {"cursor": "use next_cursor"}) from None
