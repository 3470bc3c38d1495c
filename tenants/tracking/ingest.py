"""Ingest: move accepted batches from the Redis stream into ``visits`` and keep ``visitors`` current; count the
cookieless batches of opt-in sites (``tenants/tracking/cookieless.py``) without storing them.

Storage is exactly-once although delivery is at-least-once: visits are inserted with
``ON CONFLICT DO NOTHING`` on the browser's hit id, and visitor counters and touches are updated only
from the rows that insert actually added, so replaying an entry changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from tenants.conversions.integrations import custom_event_names
from tenants.conversions.service import enqueue_conversion
from tenants.identity.service import refresh_contact_touches
from tenants.isolation import tenant_session
from tenants.models import ConversionKind
from tenants.partners.referrals import record_referral_clicks
from tenants.redis_store import REDIS_UNAVAILABLE
from tenants.reports.rollups import traffic_rollup_sql
from tenants.tracking.buffer import IngestBuffer, Shard, decode_entry
from tenants.tracking.cookieless import count_cookieless, mark_counted
from tenants.tracking.hits import AdCookies, ClickIds, Envelope, Hit, Utm
from tenants.tracking.touches import CAMPAIGN_SQL, TOUCH_SQL

__all__ = ["DrainResult", "drain", "store_envelopes"]

log = logging.getLogger(__name__)
READ_COUNT = 500


@dataclass
class DrainResult:
    entries: int = 0
    stored_visits: int = 0
    dead_lettered: int = 0
    dead_letter_streams: set[str] = field(default_factory=set)


SLICE_SECONDS = 1.0
"""A worker drains a shard for this long at most before it lets go and moves on, so that one worker serves
every shard fairly and several spread over them (each run starts at a random shard)."""


def drain(buffer: IngestBuffer, *, max_seconds: float = 5.0) -> DrainResult:
    """Store what waits in the shards until they are empty (or held by other workers) or ``max_seconds`` have
    passed. Each shard is drained under its lease, by this worker alone, in the order collect appended."""
    result = DrainResult()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        before = result.entries
        for shard in buffer.shards_to_drain():
            if time.monotonic() >= deadline:
                break
            try:
                if not buffer.take(shard):
                    continue  # another worker's, or a dead one's entries are not claimable yet
                try:
                    _drain_shard(buffer, shard, min(deadline, time.monotonic() + SLICE_SECONDS), result)
                finally:
                    buffer.release(shard)
            except REDIS_UNAVAILABLE as error:
                # A cluster node that is away holds up only its shards; what was read stays pending for later.
                log.warning("ingest could not drain shard %d: %s", shard.index, error)
        if result.entries == before:
            break  # nothing left that this worker may take
    if result.dead_lettered:
        # Page views that will never be stored unless someone looks: say so once per run.
        streams = ", ".join(sorted(result.dead_letter_streams))
        log.warning("ingest parked %d entries in %s", result.dead_lettered, streams)
    return result


def _drain_shard(buffer: IngestBuffer, shard: Shard, until: float, result: DrainResult) -> None:
    while time.monotonic() < until:
        entries = buffer.read(shard, READ_COUNT)
        if not entries:
            return
        result.entries += len(entries)
        by_tenant: dict[UUID, list[tuple[str, bytes, Envelope]]] = defaultdict(list)
        for entry_id, data in entries:
            try:
                envelope = decode_entry(data)
            except msgspec.DecodeError as error:
                buffer.dead_letter(shard, entry_id, data, f"undecodable: {error}")
                result.dead_lettered += 1
                result.dead_letter_streams.add(shard.dead)
                continue
            by_tenant[envelope.tenant_id].append((entry_id, data, envelope))
        for tenant_id, items in by_tenant.items():
            try:
                result.stored_visits += _store_tenant(buffer, tenant_id, [envelope for _, _, envelope in items])
            except OperationalError:
                raise  # the database is away: leave everything pending, the next run retries
            except DBAPIError as error:
                # One bad entry must not block the others: store them one by one, park what fails.
                log.warning("ingest batch failed, retrying entries one by one", extra={"error": str(error)})
                for entry_id, data, envelope in items:
                    try:
                        result.stored_visits += _store_tenant(buffer, tenant_id, [envelope])
                    except OperationalError:
                        raise
                    except DBAPIError as entry_error:
                        buffer.dead_letter(shard, entry_id, _parked(envelope, data), str(entry_error.orig))
                        result.dead_lettered += 1
                        result.dead_letter_streams.add(shard.dead)
            buffer.ack(shard, [entry_id for entry_id, _, _ in items])
        if not buffer.renew(shard):
            log.warning("ingest lost its lease on shard %d; another worker drains it", shard.index)
            return


def _parked(envelope: Envelope, data: bytes) -> bytes:
    """What a dead letter keeps of an entry: all of it, but for a cookieless batch the day's hash of its browser,
    which must not outlive the day in Redis (a dead letter waits for an operator, for days perhaps). A replay
    then counts its hits as another browser's."""
    if not envelope.cookieless:
        return data
    return msgspec.json.encode(msgspec.structs.replace(envelope, visitor_id=uuid4()))


def _store_tenant(buffer: IngestBuffer, tenant_id: UUID, envelopes: list[Envelope]) -> int:
    cookieless = [envelope for envelope in envelopes if envelope.cookieless]
    if cookieless:
        with tenant_session(tenant_id) as session:
            counted = count_cookieless(session, buffer.client, cookieless)
        mark_counted(buffer.client, counted)
        envelopes = [envelope for envelope in envelopes if not envelope.cookieless]
        if not envelopes:
            return 0
    return _store_visits(tenant_id, envelopes)


def _store_visits(tenant_id: UUID, envelopes: list[Envelope]) -> int:
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


_encode = msgspec.json.Encoder().encode


class _NewVisitor(msgspec.Struct):
    id: UUID
    site_id: UUID
    seen_ms: int
    is_bot: bool


class _VisitRow(msgspec.Struct):
    """One hit as ``_STORE_VISITS`` reads it (keys are its record's column names)."""

    hit_id: UUID
    occurred_ms: int
    received_ms: int
    visitor_id: UUID
    site_id: UUID
    contact_id: UUID | None
    type: str
    event_name: str | None
    url: str
    path: str
    title: str | None
    referrer: str | None
    utm: Utm
    click_ids: ClickIds
    ad_cookies: AdCookies
    partner_code: str | None
    lang: str | None
    screen: str | None
    props: dict[str, Any] | None
    user_agent: str | None
    ip: str | None
    is_bot: bool
    bot_reason: str | None
    counted_before_consent: bool


_INSERT_VISITORS = text(
    """INSERT INTO visitors (tenant_id, id, site_id, first_seen_at, last_seen_at, is_bot, created_at)
       SELECT :tenant_id, r.id, r.site_id, to_timestamp(r.seen_ms / 1000.0), to_timestamp(r.seen_ms / 1000.0),
           r.is_bot, now()
       FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id uuid, site_id uuid, seen_ms bigint, is_bot boolean)
       ORDER BY r.id
       ON CONFLICT DO NOTHING"""
)
_LOCK_VISITORS = text(
    """SELECT id, contact_id, first_touch IS NULL, visit_count > 0 FROM visitors
       WHERE tenant_id = :tenant_id AND id = ANY(CAST(:ids AS uuid[]))
       ORDER BY id FOR UPDATE"""
)
# One statement stores the hits and folds the ones it added (not re-sent ones) into their visitors
# (counts, first/last seen, first touch set once, last touch the latest campaign visit, bot flag) and
# into the daily traffic rollups, so a replayed entry changes neither.
_STORE_VISITS = text(
    f"""WITH inserted AS (
           INSERT INTO visits (tenant_id, hit_id, occurred_at, received_at, visitor_id, site_id, contact_id,
               type, event_name, url, path, title, referrer, utm_source, utm_medium, utm_campaign, utm_term,
               utm_content, utm_id, click_ids, ad_cookies, partner_code, lang, screen, props, user_agent, ip,
               is_bot, bot_reason, counted_before_consent)
           SELECT :tenant_id, r.hit_id, to_timestamp(r.occurred_ms / 1000.0), to_timestamp(r.received_ms / 1000.0),
               r.visitor_id, r.site_id, r.contact_id, r.type, r.event_name, r.url, r.path, r.title, r.referrer,
               r.utm->>'source', r.utm->>'medium', r.utm->>'campaign', r.utm->>'term', r.utm->>'content',
               r.utm->>'id', r.click_ids, r.ad_cookies, r.partner_code, r.lang, r.screen, r.props, r.user_agent,
               r.ip, r.is_bot, r.bot_reason, r.counted_before_consent
           FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(hit_id uuid, occurred_ms bigint,
               received_ms bigint, visitor_id uuid, site_id uuid, contact_id uuid, type text, event_name text,
               url text, path text, title text, referrer text, utm jsonb, click_ids jsonb, ad_cookies jsonb,
               partner_code text, lang text, screen text, props jsonb, user_agent text, ip inet, is_bot boolean,
               bot_reason text, counted_before_consent boolean)
           ON CONFLICT DO NOTHING
           RETURNING *),
       {traffic_rollup_sql("inserted", "CAST(:with_visits AS uuid[])")},
       seen AS (
           SELECT visitor_id, count(*) AS added, min(occurred_at) AS first_seen_at,
               max(occurred_at) AS last_seen_at, bool_and(is_bot) AS all_bot
           FROM inserted GROUP BY visitor_id),
       first_touches AS (  -- bots are kept out of attribution
           SELECT DISTINCT ON (v.visitor_id) v.visitor_id, {TOUCH_SQL} AS touch, v.occurred_at AS at
           FROM inserted v
           WHERE NOT v.is_bot AND v.visitor_id = ANY(CAST(:without_first_touch AS uuid[]))
           ORDER BY v.visitor_id, v.occurred_at, v.hit_id),
       last_touches AS (
           SELECT DISTINCT ON (v.visitor_id) v.visitor_id, {TOUCH_SQL} AS touch, v.occurred_at AS at
           FROM inserted v
           WHERE NOT v.is_bot AND {CAMPAIGN_SQL}
           ORDER BY v.visitor_id, v.occurred_at DESC, v.hit_id DESC),
       updated AS (
           UPDATE visitors v SET
               visit_count = v.visit_count + s.added,
               first_seen_at = least(v.first_seen_at, s.first_seen_at),
               last_seen_at = greatest(v.last_seen_at, s.last_seen_at),
               first_touch = coalesce(v.first_touch, f.touch),
               first_touch_at = CASE WHEN v.first_touch IS NULL THEN f.at ELSE v.first_touch_at END,
               last_touch = CASE WHEN l.at IS NOT NULL AND (v.last_touch_at IS NULL OR l.at >= v.last_touch_at)
                                 THEN l.touch ELSE v.last_touch END,
               last_touch_at = greatest(v.last_touch_at, l.at),
               is_bot = v.is_bot AND s.all_bot
           FROM seen s
               LEFT JOIN first_touches f ON f.visitor_id = s.visitor_id
               LEFT JOIN last_touches l ON l.visitor_id = s.visitor_id
           WHERE v.tenant_id = :tenant_id AND v.id = s.visitor_id
           RETURNING v.contact_id)
       SELECT (SELECT count(*) FROM inserted),
           ARRAY(SELECT DISTINCT contact_id FROM updated WHERE contact_id IS NOT NULL ORDER BY contact_id)"""  # noqa: S608 - fixed SQL fragments, no input
)


def store_envelopes(session: Session, envelopes: list[Envelope]) -> int:
    """Store the hits of one tenant's envelopes; returns how many visits were new."""
    tenant_id = envelopes[0].tenant_id
    new_visitors: dict[UUID, _NewVisitor] = {}
    for envelope in envelopes:
        seen_ms = min(hit.ts for hit in envelope.hits)
        is_bot = envelope.bot_reason is not None
        known = new_visitors.get(envelope.visitor_id)
        if known is None:
            new_visitors[envelope.visitor_id] = _NewVisitor(envelope.visitor_id, envelope.site_id, seen_ms, is_bot)
        else:
            known.seen_ms = min(known.seen_ms, seen_ms)
            known.is_bot = known.is_bot and is_bot
    ids = sorted(new_visitors)
    params: dict[str, Any] = {"tenant_id": tenant_id}
    session.execute(_INSERT_VISITORS, {**params, "rows": _encode([new_visitors[i] for i in ids]).decode()})
    # Lock in id order so concurrent ingest workers never deadlock on shared visitors; the lock also
    # holds off a link to a contact until these visits are stored with the contact they have now.
    locked = session.execute(_LOCK_VISITORS, {**params, "ids": ids}).all()
    contact_of = {visitor_id: contact_id for visitor_id, contact_id, _, _ in locked}
    rows = [
        _visit_row(envelope, hit, contact_of.get(envelope.visitor_id))
        for envelope in envelopes
        for hit in envelope.hits
    ]
    added, contacts = session.execute(
        _STORE_VISITS,
        {
            **params,
            "rows": _encode(rows).decode(),
            "without_first_touch": [visitor_id for visitor_id, _, missing, _ in locked if missing],
            # Visitors with stored visits (counted exactly, under the lock): only their first hit here
            # needs the previous hit looked up for the rollups.
            "with_visits": [visitor_id for visitor_id, _, _, stored in locked if stored],
        },
    ).one()
    record_referral_clicks(session, envelopes)
    _enqueue_custom_conversions(session, envelopes)
    # Known people's touches and last-seen follow their new visits (a merge may have run before these
    # hits were stored, and later visits move last touch on). Commit first: a form submission locks a
    # contact and then its visitor, so holding visitor locks while locking contacts could deadlock.
    session.commit()
    for contact_id in contacts:
        refresh_contact_touches(session, contact_id)
    return int(added)


def _enqueue_custom_conversions(session: Session, envelopes: list[Envelope]) -> None:
    """Tracked events an integration names become conversions (a re-sent hit is recorded once: the conversion's
    key is the hit)."""
    events = [hit for envelope in envelopes for hit in envelope.hits if hit.type == "event" and hit.event_name]
    if not events or not (names := custom_event_names(session)):
        return
    for hit in events:
        if hit.event_name in names:
            enqueue_conversion(session, ConversionKind.CUSTOM, hit.hit_id)


def _visit_row(envelope: Envelope, hit: Hit, contact_id: UUID | None) -> _VisitRow:
    return _VisitRow(
        hit_id=hit.hit_id,
        occurred_ms=hit.ts,
        received_ms=envelope.received_at,
        visitor_id=envelope.visitor_id,
        site_id=envelope.site_id,
        contact_id=contact_id,
        type=hit.type,
        event_name=hit.event_name,
        url=hit.url,
        path=hit.path,
        title=hit.title,
        referrer=hit.referrer or None,
        utm=hit.utm,
        click_ids=hit.click_ids,
        ad_cookies=hit.cookies,
        partner_code=hit.partner_code,
        lang=hit.lang,
        screen=hit.screen,
        props=hit.props,
        user_agent=envelope.user_agent,
        ip=envelope.ip,
        is_bot=envelope.bot_reason is not None,
        bot_reason=envelope.bot_reason,
        counted_before_consent=hit.counted_before_consent,
    )
