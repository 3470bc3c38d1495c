"""Cookieless counting: the visits of browsers that have not consented on an opt-in site, counted without a cookie
or any stored identifier.

Collect names such a browser, for one UTC day, by an HMAC-SHA256 of the site, the truncated IP address and the
user agent, keyed by a random salt of that day (:func:`day_salt`). The salt lives only in Redis, created atomically
by the first process that needs it and expiring after :data:`SALT_TTL_SECONDS` (on the ingest Redis, with the
other cookieless keys: one hash tag per tenant), and is never derived from a fixed
secret: once it is gone, nobody (us included) can tell whose hash a day's was. The hash and the hit's attribution
fields (:func:`cookieless_hit`) go into the ingest stream like any batch, so the backlog bound, the 503 rule and
batching hold.

Ingest counts them (:func:`count_cookieless`): a visitor once per site, day and hash, a visit when the hash's
previous hit is more than 30 minutes before, decided in Redis by keys that live a day at most, then added to the
rollups' ``cookieless_*`` columns in PostgreSQL. Nothing per browser is written there, and the counts are never
merged into a visitor or a contact. Because the hash rotates daily, a browser seen on two days counts twice.

Exactly once: each hit's Redis decision is kept under its hit id (for a day) and marked counted once the rollups
committed, so a re-delivered or replayed entry adds nothing, and a batch whose transaction failed is counted again
with the same decision. A worker killed between the commit and the mark counts that batch twice.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import msgspec
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlmodel import Session

from tenants.reports.rollups import cookieless_rollup_sql
from tenants.tracking.hits import ClickIds, Envelope, Hit, Utm
from tenants.tracking.origins import truncate_ip

__all__ = [
    "COUNTED_HITS_KEPT_DAYS",
    "DAY_SECONDS",
    "SALT_TTL_SECONDS",
    "cookieless_hit",
    "count_cookieless",
    "day_salt",
    "mark_counted",
    "salt_key",
    "visitor_hash",
]

SALT_TTL_SECONDS = 48 * 3600
"""A day's salt outlives its day by a day (hits arrive late, processes' clocks differ), then it is gone."""
DAY_SECONDS = 24 * 3600
"""Ingest's keys about a hash (seen today, its last hit, each hit's decision) live this long at most."""
SESSION_GAP_MS = 30 * 60 * 1000
"""As the rollups' ``SESSION_GAP``: a hit more than this after the previous one starts a visit."""
COUNTED = b"counted"

_salts: dict[tuple[UUID, date], bytes] = {}
"""This process's copy of the salts in use (a salt never changes once created); other days' are dropped."""


def _prefix(tenant_id: UUID) -> str:
    """The tenant's cookieless keys live on the ingest Redis under one hash tag, so the counting script's keys
    (several hits and hashes of one tenant) sit in one Redis Cluster slot."""
    return f"trailmark:cookieless:{{{tenant_id}}}"


def salt_key(tenant_id: UUID, day: date) -> str:
    return f"{_prefix(tenant_id)}:salt:{day.isoformat()}"


# KEYS: the salt; ARGV: a new random one, its TTL. SET NX and GET at once, so every process of every machine
# uses the same salt.
_SALT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return redis.call('GET', KEYS[1])
"""


async def day_salt(client: aioredis.Redis, tenant_id: UUID, day: date) -> bytes:
    """The tenant's salt of ``day``: the one in Redis, or a new random one that the first asker stores."""
    known = _salts.get((tenant_id, day))
    if known is not None:
        return known
    key = salt_key(tenant_id, day)
    salt = await client.eval(_SALT, 1, key, secrets.token_bytes(32), SALT_TTL_SECONDS)
    for stale in [cached for cached in _salts if cached[1] != day]:
        del _salts[stale]
    _salts[(tenant_id, day)] = salt
    return bytes(salt)


def visitor_hash(salt: bytes, site_id: UUID, ip: str | None, user_agent: str | None) -> UUID:
    """The day's name of a browser on a site: HMAC-SHA256 of the site, the truncated address (IPv4 /24, IPv6
    /48, whatever the site keeps) and the user agent, cut to 128 bits (plenty to tell a day's browsers apart)."""
    message = b"\x00".join((site_id.bytes, (truncate_ip(ip) or "").encode(), (user_agent or "").encode()))
    return UUID(bytes=hmac.new(salt, message, hashlib.sha256).digest()[:16])


def cookieless_hit(hit: Hit) -> Hit:
    """What of a hit the cookieless count needs: its id, time, type and the inputs of its attribution
    dimensions. The URLs lose their query (the UTMs are already parsed out), click ids their values (only the
    platform counts); title, props, ad cookies, language and screen are left behind."""
    present = {name: "" for name in ClickIds.__struct_fields__ if getattr(hit.click_ids, name)}
    return Hit(
        hit_id=hit.hit_id,
        ts=hit.ts,
        url=_before_query(hit.url),
        type=hit.type,
        referrer=_before_query(hit.referrer) if hit.referrer else None,
        utm=Utm(source=hit.utm.source, medium=hit.utm.medium, campaign=hit.utm.campaign),
        click_ids=ClickIds(**present),
        partner_code=hit.partner_code,
    )


def _before_query(url: str) -> str:
    return url.split("#", 1)[0].split("?", 1)[0]


# --- ingest ----------------------------------------------------------------------------------------

# Per hit (KEYS: its decision, the hash's "seen on the hit's day", the hash's last hit time; ARGV: its time):
# the decision kept from an earlier try, "counted" when it was counted, else a new one ("<visitor><entry>").
_DECIDE = """
local gap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local decisions = {}
for i = 1, #KEYS / 3 do
  local hit, seen, last = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local ts = tonumber(ARGV[2 + i])
  local decision = redis.call('GET', hit)
  if not decision then
    local visitor = redis.call('SET', seen, '1', 'NX', 'EX', ttl) and '1' or '0'
    local previous = tonumber(redis.call('GET', last) or '')
    local entry = (previous == nil or ts - previous > gap) and '1' or '0'
    if previous == nil or ts > previous then redis.call('SET', last, ts, 'EX', ttl) end
    decision = visitor .. entry
    redis.call('SET', hit, decision, 'EX', ttl)
  end
  decisions[i] = decision
end
return decisions
"""


class _CountedHit(msgspec.Struct):
    """One cookieless hit as :func:`tenants.reports.rollups.cookieless_rollup_sql` reads it."""

    site_id: UUID
    day: date
    is_bot: bool
    type: str
    url: str
    referrer: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    click_ids: ClickIds
    partner_code: str | None
    visitor: bool
    entry: bool


_COUNT = text(
    cookieless_rollup_sql(
        """jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(site_id uuid, day date, is_bot boolean, type text, url text,
            referrer text, utm_source text, utm_medium text, utm_campaign text, click_ids jsonb, partner_code text,
            visitor boolean, entry boolean)"""
    )
)
_FIRST_COUNT = text(
    """INSERT INTO cookieless_counted_hits (tenant_id, hit_id, counted_on)
       SELECT :tenant_id, id, current_date FROM unnest(CAST(:ids AS uuid[])) AS id
       ON CONFLICT (tenant_id, hit_id) DO NOTHING RETURNING hit_id"""
)
COUNTED_HITS_KEPT_DAYS = 2
"""How long a counted hit's id is kept: past the Redis decisions' day, for entries re-delivered late."""
_encode = msgspec.json.Encoder().encode


def _keys(tenant_id: UUID, envelope: Envelope, hit: Hit) -> list[str]:
    prefix = _prefix(tenant_id)
    day = _day(hit.ts).isoformat()
    return [f"{prefix}:hit:{hit.hit_id}", f"{prefix}:{envelope.visitor_id}:{day}", f"{prefix}:{envelope.visitor_id}"]


def _day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


def count_cookieless(session: Session, client: Any, envelopes: list[Envelope]) -> list[str]:
    """Add the cookieless hits of one tenant's ``envelopes`` to its rollups in ``session``'s transaction (not
    committed here); returns the Redis keys of the hits counted, for :func:`mark_counted` once it commits."""
    tenant_id = envelopes[0].tenant_id
    unique = {hit.hit_id: (envelope, hit) for envelope in envelopes for hit in envelope.hits}  # a re-sent hit once
    hits = sorted(unique.values(), key=lambda pair: (pair[1].ts, pair[1].hit_id))
    keys = [key for envelope, hit in hits for key in _keys(tenant_id, envelope, hit)]
    decisions = client.eval(_DECIDE, len(keys), *keys, SESSION_GAP_MS, DAY_SECONDS, *(hit.ts for _, hit in hits))
    undecided = [hit.hit_id for (_, hit), decision in zip(hits, decisions, strict=True) if decision != COUNTED]
    # Counted in this transaction only if not counted before: the Redis mark comes after the commit, so a worker
    # killed in between leaves it unset, and only this record says that the re-delivered entry was counted.
    new = (
        set(session.execute(_FIRST_COUNT, {"tenant_id": tenant_id, "ids": undecided}).scalars()) if undecided else set()
    )
    rows, counted = [], []
    for (envelope, hit), decision, hit_key in zip(hits, decisions, keys[::3], strict=True):
        if decision == COUNTED:
            continue  # re-delivered or replayed: counted already
        counted.append(hit_key)  # marked either way: counted now or in a transaction that committed before
        if hit.hit_id not in new:
            continue
        rows.append(
            _CountedHit(
                site_id=envelope.site_id,
                day=_day(hit.ts),
                is_bot=envelope.bot_reason is not None,
                type=hit.type,
                url=hit.url,
                referrer=hit.referrer or None,
                utm_source=hit.utm.source,
                utm_medium=hit.utm.medium,
                utm_campaign=hit.utm.campaign,
                click_ids=hit.click_ids,
                partner_code=hit.partner_code,
                visitor=decision[0:1] == b"1",
                entry=decision[1:2] == b"1",
            )
        )
    if rows:
        session.execute(_COUNT, {"tenant_id": tenant_id, "rows": _encode(rows).decode()})
    return counted


def mark_counted(client: Any, hit_keys: list[str]) -> None:
    """After the rollups committed: these hits are counted, so a replay of their entry adds nothing."""
    if hit_keys:
        pipe = client.pipeline(transaction=False)
        for key in hit_keys:
            pipe.set(key, COUNTED, xx=True, keepttl=True)
        pipe.execute()
