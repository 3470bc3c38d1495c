"""Dashboard benchmark (``make bench-dashboard``): the overview, the attribution and a contact timeline of a
tenant with 5,000,000 visits, read from rollups and compared with a scan of the visits in the same run.

In one run it

1. creates a fresh test database (``tests/services.py``), migrates, and registers one tenant with one site;
2. seeds that tenant in SQL, inside the database (``generate_series``, no rows cross the wire):
   ``--visitors`` browsers arriving evenly over ``--days`` days, ``--visits`` page views between them (each
   browser's first one is its arrival; the others go to browsers already seen, mostly recent ones), one in
   ``VISITORS_PER_CONTACT`` browsers identified as a contact, and one contact with ``--timeline-visits``
   visits. Every value is a deterministic pseudo-random function of the row number (``hashint8extended``),
   so two runs seed the same tenant. Visitors' and contacts' counters and touches are then derived from
   the stored visits the way ingest and ``refresh_contact_touches`` define them;
3. fills the daily rollups with the reports service's own re-derivation,
   ``tenants.reports.service.rebuild_rollups``. The bench measures *reading*: the ingest path that keeps
   rollups current hit by hit is measured by ``bench/collect.py`` and proven equal to a scan by the tests;
4. times, ``--runs`` times each, inside a real tenant session (RLS on, as the app role):
   the overview and the attribution (first and last touch) of the last 90 days from the rollups
   (``tenants.reports.service.overview`` / ``attribution``), the same numbers computed by plain SQL over
   ``visits`` and ``contacts`` (the scan), and 50-event pages of the heavy contact's timeline
   (``tenants.identity.service.timeline`` with its ``before`` cursor), walking back from the newest page;
5. checks that the rollup answers equal the scan's.

The traffic mix (``PROFILES``): mostly direct and organic search, some paid search with gclid/msclkid,
paid social with fbclid, email, organic social, partners with a partner code, and referrals; a long tail of
campaigns (skewed over ``CAMPAIGNS`` names) and landing pages (over ``LANDING_PAGES`` paths); 2 % of the
browsers are bots. About a third of the page views after the first land from a channel; the others are
navigation inside the site (own-site referrer, no campaign data).

The last line of stdout::

    overview_p95_ms=… attribution_p95_ms=… scan_p95_ms=… ratio=… timeline_p95_ms=… equal=true|false

``ratio`` is the scan's p95 over the slower of the two rollup reports' p95. Targets: overview and
attribution p95 ≤ 150 ms, ratio ≥ 20, timeline p95 ≤ 50 ms, equal = true (reported on stderr). The exit
status is non-zero when the answers differ.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# tests/ and bench/ are not installed packages: import them from the checkout, however this file runs.
sys.path.insert(0, str(REPO))

from bench.harness import BenchError, Rig, check_stop, log, owner_connection, run_bench  # noqa: E402

ORIGIN = "https://shop.example"
VISITORS_PER_CONTACT = 10
"""Browser ``k * 10 + 1`` is contact ``k``'s: 500,000 browsers give 50,000 contacts."""
HEAVY_VISITOR = 1
"""The browser of contact 0, which gets ``--timeline-visits`` visits: the long timeline."""
REPORT_DAYS = 90
TIMELINE_PAGE = 50
CAMPAIGNS = 400
LANDING_PAGES = 2000
TARGET_REPORT_MS = 150
TARGET_RATIO = 20
TARGET_TIMELINE_MS = 50


class AnswersDiffer(BenchError):
    """The rollups and the scan disagree: the exit status says so."""


# --- seeding ---------------------------------------------------------------------------------------

# Deterministic uuids from row numbers, so the seeding needs no lookups.
_HIT_ID = "lpad(to_hex({}), 32, '0')::uuid"
_VISITOR_ID = "('00000000-0000-4000-a000-' || lpad(to_hex({}), 12, '0'))::uuid"
_CONTACT_ID = "('00000000-0000-4000-b000-' || lpad(to_hex({}), 12, '0'))::uuid"


def _uniform(seed: int) -> str:
    """A pseudo-random number in [0, 1) from the row number ``j`` and a seed."""
    return f"((hashint8extended(j, {seed}) & 2147483647)::float8 / 2147483648.0)"


PROFILES: list[tuple[str, int]] = [
    ("direct", 300),
    ("organic_search", 280),
    ("paid_search", 90),
    ("paid_social", 60),
    ("email", 80),
    ("social", 90),
    ("partner", 60),
    ("referral", 40),
]
"""How landings split between channels, per mille: mostly direct and organic search."""


def _profile_case() -> str:
    """SQL choosing a profile from ``r.channel_draw`` (a number in [0, 1000))."""
    branches, upper = [], 0
    for name, share in PROFILES:
        upper += share
        branches.append(f"WHEN r.channel_draw < {upper} THEN '{name}'")
    return "CASE " + " ".join(branches) + " END"


def _pick(draw: str, values: list[str]) -> str:
    """SQL picking one of ``values`` by a draw in [0, 1)."""
    items = ", ".join(f"'{value}'" for value in values)
    return f"(ARRAY[{items}])[1 + floor({draw} * {len(values)})::int]"


SEED_VISITS = f"""
INSERT INTO visits (tenant_id, hit_id, occurred_at, received_at, visitor_id, site_id, contact_id, type, url, path,
    title, referrer, utm_source, utm_medium, utm_campaign, utm_term, utm_content, click_ids, partner_code, lang,
    screen, user_agent, is_bot, bot_reason)
SELECT %(tenant)s, {_HIT_ID.format("j")}, t.at, t.at + interval '2 seconds', {_VISITOR_ID.format("b.visitor")},
    %(site)s, CASE WHEN b.visitor %% {VISITORS_PER_CONTACT} = 1
                   THEN {_CONTACT_ID.format(f"b.visitor / {VISITORS_PER_CONTACT}")} END,
    'pageview', %(origin)s || p.path || coalesce('?' || q.query, ''), p.path, 'Shop ' || p.path,
    s.referrer, s.utm_source, s.utm_medium, s.utm_campaign, s.utm_term, s.utm_content, s.click_ids,
    s.partner_code, 'en-US', '1920x1080',
    CASE WHEN b.is_bot THEN 'Googlebot/2.1' ELSE 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0' END,
    b.is_bot, CASE WHEN b.is_bot THEN 'user_agent' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS j
CROSS JOIN LATERAL (SELECT
    %(start)s::timestamptz + (j + {_uniform(1)}) * %(step)s::interval AS at) t
CROSS JOIN LATERAL (SELECT
    j * %(visitors)s::bigint / %(visits)s::bigint AS arrived,
    j = 0 OR j * %(visitors)s::bigint / %(visits)s::bigint
        > (j - 1) * %(visitors)s::bigint / %(visits)s::bigint AS first_visit) a
CROSS JOIN LATERAL (SELECT
    CASE WHEN a.first_visit THEN a.arrived
         WHEN j %% %(heavy_every)s = 7 THEN {HEAVY_VISITOR}
         -- a returning browser: one already seen, most likely a recent one
         ELSE greatest(a.arrived - 1 - floor(a.arrived * power({_uniform(2)}, 4))::bigint, 0) END AS visitor) v
CROSS JOIN LATERAL (SELECT v.visitor, v.visitor %% 50 = 37 AS is_bot) b
CROSS JOIN LATERAL (SELECT
    a.first_visit OR {_uniform(3)} < 0.35 AS lands,
    floor({_uniform(4)} * 1000) AS channel_draw,
    {_uniform(5)} AS pick, {_uniform(6)} AS tail, {_uniform(7)} AS page_draw) r
CROSS JOIN LATERAL (SELECT CASE WHEN NOT r.lands THEN 'internal' ELSE {_profile_case()} END AS profile,
    'spring-' || floor({CAMPAIGNS} * power(r.tail, 3))::int AS campaign) c
CROSS JOIN LATERAL (SELECT CASE
    WHEN r.page_draw < 0.25 THEN '/'
    WHEN r.page_draw < 0.37 THEN '/pricing'
    WHEN r.page_draw < 0.45 THEN '/features'
    WHEN r.page_draw < 0.50 THEN '/signup'
    ELSE '/blog/post-' || floor({LANDING_PAGES} * power((r.page_draw - 0.5) * 2, 2))::int END AS path) p
CROSS JOIN LATERAL (SELECT
    CASE c.profile
        WHEN 'organic_search' THEN {_pick("r.pick", ["https://www.google.com/", "https://www.bing.com/",
                                                       "https://duckduckgo.com/", "https://www.ecosia.org/"])}
        WHEN 'paid_search' THEN CASE WHEN r.pick < 0.85 THEN 'https://www.google.com/' ELSE 'https://www.bing.com/' END
        WHEN 'paid_social' THEN {_pick("r.pick", ["https://www.facebook.com/", "https://www.instagram.com/"])}
        WHEN 'social' THEN {_pick("r.pick", ["https://t.co/", "https://www.linkedin.com/", "https://www.reddit.com/",
                                              "https://www.facebook.com/"])}
        WHEN 'partner' THEN 'https://partner-' || floor(r.tail * 20)::int || '.example/'
        WHEN 'referral' THEN 'https://blog-' || floor(power(r.tail, 2) * 300)::int || '.example/'
        WHEN 'internal' THEN %(origin)s || '/'
    END AS referrer,
    CASE c.profile WHEN 'paid_search' THEN CASE WHEN r.pick < 0.85 THEN 'google' ELSE 'bing' END
                   WHEN 'paid_social' THEN CASE WHEN r.pick < 0.7 THEN 'facebook' ELSE 'instagram' END
                   WHEN 'email' THEN 'newsletter'
                   WHEN 'social' THEN CASE WHEN r.pick < 0.3 THEN 'linkedin' END END AS utm_source,
    CASE c.profile WHEN 'paid_search' THEN 'cpc' WHEN 'paid_social' THEN 'paid_social' WHEN 'email' THEN 'email'
                   WHEN 'social' THEN CASE WHEN r.pick < 0.3 THEN 'social' END END AS utm_medium,
    CASE WHEN c.profile IN ('paid_search', 'paid_social') THEN c.campaign
         WHEN c.profile = 'email' THEN 'newsletter-' || floor(r.tail * 26)::int
         WHEN c.profile = 'social' AND r.pick < 0.3 THEN 'launch' END AS utm_campaign,
    CASE WHEN c.profile = 'paid_search' THEN 'kw-' || floor(power(r.page_draw, 2) * 500)::int END AS utm_term,
    CASE WHEN c.profile = 'paid_social' THEN 'ad-' || floor(r.page_draw * 12)::int END AS utm_content,
    CASE WHEN c.profile = 'paid_search' AND r.pick < 0.85 THEN jsonb_build_object('gclid', 'G' || j)
         WHEN c.profile = 'paid_search' THEN jsonb_build_object('msclkid', 'M' || j)
         WHEN c.profile = 'paid_social' THEN jsonb_build_object('fbclid', 'F' || j)
         ELSE '{{}}'::jsonb END AS click_ids,
    CASE WHEN c.profile = 'partner' THEN 'p' || floor(power(r.tail, 2) * 200)::int END AS partner_code) s
CROSS JOIN LATERAL (SELECT concat_ws('&',
    'utm_source=' || s.utm_source, 'utm_medium=' || s.utm_medium, 'utm_campaign=' || s.utm_campaign,
    'utm_term=' || s.utm_term, 'utm_content=' || s.utm_content, 'gclid=' || (s.click_ids->>'gclid'),
    'msclkid=' || (s.click_ids->>'msclkid'), 'fbclid=' || (s.click_ids->>'fbclid'), 'ref=' || s.partner_code)
    AS joined) qs
CROSS JOIN LATERAL (SELECT nullif(qs.joined, '') AS query) q
"""
"""One statement per chunk of row numbers ``first..last``; the visits of row ``j`` are in time order."""

SEED_CONTACTS = f"""
INSERT INTO contacts (tenant_id, id, email, first_name, last_name, custom, created_at, updated_at)
SELECT %(tenant)s, {_CONTACT_ID.format("k")}, 'contact-' || k || '@bench.example',
    (ARRAY['Monica', 'Ravi', 'Ines', 'Tomas', 'Aiko', 'Kofi'])[1 + k %% 6], 'Person ' || k, '{{}}'::jsonb,
    %(start)s, %(start)s
FROM generate_series(0, %(contacts)s - 1) AS k
"""
"""Placeholders: their times and touches are derived from their visits once those are stored."""

SEED_VISITORS = f"""
WITH seen AS (
    SELECT visitor_id, count(*) AS visits, min(occurred_at) AS first_seen, max(occurred_at) AS last_seen,
        bool_and(is_bot) AS all_bot, min(contact_id::text)::uuid AS contact_id
    FROM visits WHERE tenant_id = %(tenant)s GROUP BY visitor_id),
firsts AS (  -- bots are kept out of attribution, as ingest keeps them
    SELECT DISTINCT ON (v.visitor_id) v.visitor_id, {{touch}} AS touch, v.occurred_at AS at
    FROM visits v WHERE v.tenant_id = %(tenant)s AND NOT v.is_bot
    ORDER BY v.visitor_id, v.occurred_at, v.hit_id),
lasts AS (
    SELECT DISTINCT ON (v.visitor_id) v.visitor_id, {{touch}} AS touch, v.occurred_at AS at
    FROM visits v WHERE v.tenant_id = %(tenant)s AND NOT v.is_bot AND {{campaign}}
    ORDER BY v.visitor_id, v.occurred_at DESC, v.hit_id DESC)
INSERT INTO visitors (tenant_id, id, site_id, contact_id, identified_at, evidence, first_seen_at, last_seen_at,
    first_touch, first_touch_at, last_touch, last_touch_at, visit_count, is_bot, created_at)
SELECT %(tenant)s, s.visitor_id, %(site)s, s.contact_id,
    CASE WHEN s.contact_id IS NOT NULL THEN s.first_seen + (s.last_seen - s.first_seen) / 3 END,
    CASE WHEN s.contact_id IS NOT NULL THEN 'form' END,
    s.first_seen, s.last_seen, f.touch, f.at, l.touch, l.at, s.visits, s.all_bot, s.first_seen
FROM seen s LEFT JOIN firsts f USING (visitor_id) LEFT JOIN lasts l USING (visitor_id)
"""
"""Every browser from its stored visits, with the counters and touches ingest would have given it. A
contact's browser was identified a third of the way through its history (a form submission)."""

FINISH_CONTACTS = """
UPDATE contacts c SET first_touch = v.first_touch, first_touch_at = v.first_touch_at,
    last_touch = v.last_touch, last_touch_at = v.last_touch_at, last_seen_at = v.last_seen_at,
    created_at = v.identified_at, updated_at = v.identified_at, identified_at = v.identified_at
FROM visitors v
WHERE c.tenant_id = %(tenant)s AND v.tenant_id = %(tenant)s AND v.contact_id = c.id
"""
"""A contact has one browser here, so its touches are that browser's (what ``refresh_contact_touches``
computes from the merged history); it was created when the browser identified."""

LINK_EVENTS = """
INSERT INTO identity_events (tenant_id, id, kind, visitor_id, contact_id, evidence, detail, created_at)
SELECT %(tenant)s, gen_random_uuid(), 'linked', v.id, v.contact_id, 'form', '{}'::jsonb, v.identified_at
FROM visitors v WHERE v.tenant_id = %(tenant)s AND v.contact_id IS NOT NULL
"""

CHUNK_VISITS = 250_000
SEED_CONNECTIONS = 2
SECONDARY_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'visits'::regclass AND NOT i.indisprimary ORDER BY c.relname
"""


@dataclass(frozen=True)
class Plan:
    """What to seed: a tenant's traffic over ``days`` days ending at ``end``."""

    visits: int
    visitors: int
    contacts: int
    timeline_visits: int
    days: int
    end: datetime

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


def _bulk_session(connection: Any, tenant_id: uuid.UUID) -> None:
    """As the owner (a superuser): no foreign-key triggers during the bulk load (every key is consistent by
    construction) and no WAL flush per statement."""
    connection.execute("SET session_replication_role = replica")
    connection.execute("SET synchronous_commit = off")
    connection.execute("SET work_mem = '256MB'")
    connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))


def _seed_chunk(owner_url: str, chunk: dict[str, Any]) -> tuple[int, int]:
    with owner_connection(owner_url) as connection:
        _bulk_session(connection, chunk["tenant"])
        connection.execute(SEED_VISITS, chunk)
    return chunk["first"], chunk["last"]


def seed(owner_url: str, tenant_id: uuid.UUID, site_id: uuid.UUID, plan: Plan) -> dict[str, float]:
    """Seed the tenant; returns the seconds each step took."""
    connection = owner_connection(owner_url)
    from tenants.tracking.touches import CAMPAIGN_SQL, TOUCH_SQL

    timings: dict[str, float] = {}

    def step(name: str, statement: str, params: dict[str, Any]) -> None:
        started = time.perf_counter()
        connection.execute(statement, params)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
        check_stop()

    base = {"tenant": tenant_id, "site": site_id, "origin": ORIGIN, "start": plan.start}
    _bulk_session(connection, tenant_id)
    months = (plan.end.year - plan.start.year) * 12 + plan.end.month - plan.start.month + 1
    step("partitions", "SELECT trailmark_ensure_visit_partitions(%(first)s, %(months)s)",
         {"first": plan.start.date().replace(day=1), "months": months})
    step("contacts", SEED_CONTACTS, {**base, "contacts": plan.contacts})
    step_interval = timedelta(days=plan.days) / plan.visits
    heavy_every = max(plan.visits // plan.timeline_visits, 10)
    # Building the secondary indexes once after the load is several times faster than maintaining them
    # row by row; they are recreated from their own definitions, exactly as the migrations made them.
    indexes = connection.execute(SECONDARY_INDEXES).fetchall()
    for name, _ in indexes:
        connection.execute(f'DROP INDEX "{name}"')
    chunks = [
        {**base, "first": first, "last": min(first + CHUNK_VISITS, plan.visits) - 1, "step": step_interval,
         "visitors": plan.visitors, "visits": plan.visits, "heavy_every": heavy_every}
        for first in range(0, plan.visits, CHUNK_VISITS)
    ]
    started = time.perf_counter()
    # Two connections: the expressions that make each row cost as much CPU as storing it.
    with ThreadPoolExecutor(SEED_CONNECTIONS) as pool:
        for done in pool.map(lambda chunk: _seed_chunk(owner_url, chunk), chunks):
            log(f"seeded visits {done[0]:,}..{done[1]:,} ({time.perf_counter() - started:.0f} s so far)")
            check_stop()
    timings["visits"] = time.perf_counter() - started
    connection.execute("SET maintenance_work_mem = '512MB'")
    for _, definition in indexes:
        # The catalog gives a partitioned index as ``ON ONLY visits``: without ONLY it is built on
        # every partition too.
        step("visit indexes", definition.replace(" ON ONLY ", " ON ", 1), {})
    step("visitors", SEED_VISITORS.format(touch=TOUCH_SQL, campaign=CAMPAIGN_SQL), base)
    step("contacts", FINISH_CONTACTS, base)
    step("identity events", LINK_EVENTS, base)
    connection.execute("RESET session_replication_role")
    step("analyze", "ANALYZE visits, visitors, contacts, identity_events", {})
    connection.close()
    return timings
