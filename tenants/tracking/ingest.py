"""Ingest: move accepted batches from the Redis stream into ``visits`` and keep ``visitors`` current.

Storage is exactly-once although delivery is at-least-once: visits are inserted with
``ON CONFLICT DO NOTHING`` on the browser's hit id, and visitor counters and touches are updated only
from the rows that insert actually added, so replaying an entry changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from tenants.identity.service import refresh_contact_touches
from tenants.isolation import tenant_session
from tenants.tracking.buffer import IngestBuffer, decode_entry
from tenants.tracking.hits import Envelope, Hit

__all__ = ["DrainResult", "drain", "store_envelopes", "touch_of"]

log = logging.getLogger(__name__)
READ_COUNT = 500


@dataclass
class DrainResult:
    entries: int = 0
    stored_visits: int = 0
    dead_lettered: int = 0


def drain(buffer: IngestBuffer, *, max_seconds: float = 5.0, block_ms: int = 200) -> DrainResult:
    """Store what waits in the stream until it is empty or ``max_seconds`` have passed."""
    result = DrainResult()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        entries = buffer.read(READ_COUNT, block_ms)
        if not entries:
            break
        result.entries += len(entries)
        by_tenant: dict[UUID, list[tuple[str, bytes, Envelope]]] = defaultdict(list)
        for entry_id, data in entries:
            try:
                envelope = decode_entry(data)
            except msgspec.DecodeError as error:
                buffer.dead_letter(entry_id, data, f"undecodable: {error}")
                result.dead_lettered += 1
                continue
            by_tenant[envelope.tenant_id].append((entry_id, data, envelope))
        for tenant_id, items in by_tenant.items():
            try:
                result.stored_visits += _store_tenant(tenant_id, [envelope for _, _, envelope in items])
            except OperationalError:
                raise  # the database is away: leave everything pending, the next run retries
            except DBAPIError as error:
                # One bad entry must not block the others: store them one by one, park what fails.
                log.warning("ingest batch failed, retrying entries one by one", extra={"error": str(error)})
                for entry_id, data, envelope in items:
                    try:
                        result.stored_visits += _store_tenant(tenant_id, [envelope])
                    except OperationalError:
                        raise
                    except DBAPIError as entry_error:
                        buffer.dead_letter(entry_id, data, str(entry_error.orig))
                        result.dead_lettered += 1
            buffer.ack([entry_id for entry_id, _, _ in items])
    return result


def _store_tenant(tenant_id: UUID, envelopes: list[Envelope]) -> int:
    try:
        with tenant_session(tenant_id) as session:
            return store_envelopes(session, envelopes)
    except DBAPIError as error:
        if "no partition of relation" not in str(error.orig):
            raise
    ensure_partitions_for(envelopes)
    with tenant_session(tenant_id) as session:
        return store_envelopes(session, envelopes)


def ensure_partitions_for(envelopes: list[Envelope]) -> None:
    months = {_month(hit.ts) for envelope in envelopes for hit in envelope.hits}
    with tenant_session(envelopes[0].tenant_id) as session:
        for month in sorted(months):
            session.execute(text("SELECT trailmark_ensure_visit_partitions(:m, 1)"), {"m": month})


def _month(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-01")


def _json(rows: list[dict[str, Any]]) -> str:
    return _encode(rows).decode()


_encode = msgspec.json.Encoder().encode


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat()


def touch_of(hit: Hit) -> dict[str, Any]:
    """The attribution a hit carries, as kept on visitors and contacts."""
    seen_at = _iso(hit.ts)
    return {
        "at": seen_at,
        "landing_page": hit.url,
        "referrer": hit.referrer or None,
        "utm": msgspec.to_builtins(hit.utm),
        "click_ids": {
            name: {"value": value, "seen_at": seen_at}
            for name, value in msgspec.structs.asdict(hit.click_ids).items()
            if value
        },
        "ad_cookies": msgspec.to_builtins(hit.cookies),
        "partner_code": hit.partner_code,
    }


_INSERT_VISITORS = text(
    """INSERT INTO visitors (tenant_id, id, site_id, first_seen_at, last_seen_at, is_bot, created_at)
       SELECT :tenant_id, r.id, r.site_id, r.seen_at, r.seen_at, r.is_bot, now()
       FROM jsonb_to_recordset(CAST(:rows AS jsonb))
            AS r(id uuid, site_id uuid, seen_at timestamptz, is_bot boolean)
       ORDER BY r.id
       ON CONFLICT DO NOTHING"""
)
_LOCK_VISITORS = text(
    """SELECT id, first_touch IS NULL FROM visitors WHERE tenant_id = :tenant_id AND id = ANY(CAST(:ids AS uuid[]))
       ORDER BY id FOR UPDATE"""
)
_INSERT_VISITS = text(
    """INSERT INTO visits (tenant_id, hit_id, occurred_at, received_at, visitor_id, site_id, contact_id,
           type, event_name, url, path, title, referrer, utm_source, utm_medium, utm_campaign, utm_term,
           utm_content, utm_id, click_ids, ad_cookies, partner_code, lang, screen, props, user_agent, ip,
           is_bot, bot_reason)
       SELECT :tenant_id, r.hit_id, to_timestamp(r.occurred_ms / 1000.0), to_timestamp(r.received_ms / 1000.0),
           r.visitor_id, r.site_id, v.contact_id,
           r.type, r.event_name, r.url, r.path, r.title, r.referrer, r.utm_source, r.utm_medium,
           r.utm_campaign, r.utm_term, r.utm_content, r.utm_id, r.click_ids, r.ad_cookies, r.partner_code,
           r.lang, r.screen, r.props, r.user_agent, r.ip, r.is_bot, r.bot_reason
       FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(hit_id uuid, occurred_ms bigint,
           received_ms bigint, visitor_id uuid, site_id uuid, type text, event_name text, url text,
           path text, title text, referrer text, utm_source text, utm_medium text, utm_campaign text,
           utm_term text, utm_content text, utm_id text, click_ids jsonb, ad_cookies jsonb,
           partner_code text, lang text, screen text, props jsonb, user_agent text, ip inet,
           is_bot boolean, bot_reason text)
       JOIN visitors v ON v.tenant_id = :tenant_id AND v.id = r.visitor_id
       ON CONFLICT DO NOTHING
       RETURNING hit_id"""
)
_CONTACTS_OF = text(
    """SELECT DISTINCT contact_id FROM visitors
       WHERE tenant_id = :tenant_id AND id = ANY(CAST(:ids AS uuid[])) AND contact_id IS NOT NULL
       ORDER BY contact_id"""
)
_UPDATE_VISITORS = text(
    """UPDATE visitors v SET
           visit_count = v.visit_count + u.added,
           first_seen_at = least(v.first_seen_at, u.first_seen_at),
           last_seen_at = greatest(v.last_seen_at, u.last_seen_at),
           first_touch = coalesce(v.first_touch, u.first_touch),
           first_touch_at = CASE WHEN v.first_touch IS NULL THEN u.first_touch_at ELSE v.first_touch_at END,
           last_touch = CASE WHEN u.last_touch_at IS NOT NULL
                              AND (v.last_touch_at IS NULL OR u.last_touch_at >= v.last_touch_at)
                             THEN u.last_touch ELSE v.last_touch END,
           last_touch_at = greatest(v.last_touch_at, u.last_touch_at),
           is_bot = v.is_bot AND u.all_bot
       FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(id uuid, added integer,
           first_seen_at timestamptz, last_seen_at timestamptz, first_touch jsonb, first_touch_at timestamptz,
           last_touch jsonb, last_touch_at timestamptz, all_bot boolean)
       WHERE v.tenant_id = :tenant_id AND v.id = u.id"""
)


def store_envelopes(session: Session, envelopes: list[Envelope]) -> int:
    """Store the hits of one tenant's envelopes; returns how many visits were new."""
    tenant_id = envelopes[0].tenant_id
    rows: list[dict[str, Any]] = []
    hits_by_id: dict[str, tuple[Envelope, Hit]] = {}
    visitors: dict[UUID, dict[str, Any]] = {}
    for envelope in envelopes:
        is_bot = envelope.bot_reason is not None
        for hit in envelope.hits:
            hits_by_id[str(hit.hit_id)] = (envelope, hit)
            rows.append(_visit_row(envelope, hit))
            seen = visitors.setdefault(
                envelope.visitor_id,
                {
                    "id": str(envelope.visitor_id),
                    "site_id": str(envelope.site_id),
                    "seen_at": _iso(hit.ts),
                    "is_bot": is_bot,
                },
            )
            seen["is_bot"] = seen["is_bot"] and is_bot
    params = {"tenant_id": tenant_id}
    visitor_rows = sorted(visitors.values(), key=lambda row: row["id"])
    session.execute(_INSERT_VISITORS, {**params, "rows": _json(visitor_rows)})
    # Lock in id order so concurrent ingest workers never deadlock on shared visitors.
    locked = session.execute(_LOCK_VISITORS, {**params, "ids": [row["id"] for row in visitor_rows]}).all()
    without_first_touch = {visitor_id for visitor_id, missing in locked if missing}
    inserted = session.execute(_INSERT_VISITS, {**params, "rows": _json(rows)}).scalars().all()
    if not inserted:
        return 0
    updates: dict[UUID, dict[str, Any]] = {}
    for hit_id in inserted:
        envelope, hit = hits_by_id[str(hit_id)]
        _fold(updates, envelope, hit)
    update_rows = [
        _visitor_update_row(visitor_id, update, with_first_touch=visitor_id in without_first_touch)
        for visitor_id, update in sorted(updates.items())
    ]
    session.execute(_UPDATE_VISITORS, {**params, "rows": _json(update_rows)})
    # Known people's touches and last-seen follow their new visits (a merge may have run before these
    # hits were stored, and later visits move last touch on). Commit first: a form submission locks a
    # contact and then its visitor, so holding visitor locks while locking contacts could deadlock.
    linked = session.execute(_CONTACTS_OF, {**params, "ids": [str(v) for v in sorted(updates)]}).scalars().all()
    session.commit()
    for contact_id in linked:
        refresh_contact_touches(session, contact_id)
    return len(inserted)


def _visit_row(envelope: Envelope, hit: Hit) -> dict[str, Any]:
    utm = hit.utm
    return {
        "hit_id": str(hit.hit_id),
        "occurred_ms": hit.ts,
        "received_ms": envelope.received_at,
        "visitor_id": str(envelope.visitor_id),
        "site_id": str(envelope.site_id),
        "type": hit.type,
        "event_name": hit.event_name,
        "url": hit.url,
        "path": hit.path,
        "title": hit.title,
        "referrer": hit.referrer or None,
        "utm_source": utm.source,
        "utm_medium": utm.medium,
        "utm_campaign": utm.campaign,
        "utm_term": utm.term,
        "utm_content": utm.content,
        "utm_id": utm.id,
        "click_ids": msgspec.to_builtins(hit.click_ids),
        "ad_cookies": msgspec.to_builtins(hit.cookies),
        "partner_code": hit.partner_code,
        "lang": hit.lang,
        "screen": hit.screen,
        "props": hit.props,
        "user_agent": envelope.user_agent,
        "ip": envelope.ip,
        "is_bot": envelope.bot_reason is not None,
        "bot_reason": envelope.bot_reason,
    }


def _fold(updates: dict[UUID, dict[str, Any]], envelope: Envelope, hit: Hit) -> None:
    """Fold one newly stored hit into its visitor's pending update (times in ms until written)."""
    update = updates.setdefault(
        envelope.visitor_id,
        {
            "added": 0,
            "first_seen": hit.ts,
            "last_seen": hit.ts,
            "first_touch": None,
            "last_touch": None,
            "human": False,
        },
    )
    update["added"] += 1
    update["first_seen"] = min(update["first_seen"], hit.ts)
    update["last_seen"] = max(update["last_seen"], hit.ts)
    if envelope.bot_reason is not None:
        return  # bots are stored, flagged, and kept out of attribution
    update["human"] = True
    if update["first_touch"] is None or hit.ts < update["first_touch"].ts:
        update["first_touch"] = hit
    if hit.has_campaign_data() and (update["last_touch"] is None or hit.ts >= update["last_touch"].ts):
        update["last_touch"] = hit


def _visitor_update_row(visitor_id: UUID, update: dict[str, Any], *, with_first_touch: bool) -> dict[str, Any]:
    # A first touch is set once: building one for a visitor that has it would be thrown away.
    first: Hit | None = update["first_touch"] if with_first_touch else None
    last: Hit | None = update["last_touch"]
    return {
        "id": str(visitor_id),
        "added": update["added"],
        "first_seen_at": _iso(update["first_seen"]),
        "last_seen_at": _iso(update["last_seen"]),
        "first_touch": touch_of(first) if first else None,
        "first_touch_at": _iso(first.ts) if first else None,
        "last_touch": touch_of(last) if last else None,
        "last_touch_at": _iso(last.ts) if last else None,
        "all_bot": not update["human"],
    }
