"""Analytics consent modes per site (issue 13): how a site asks, and what collect keeps for each browser."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.privacy.retention import expire_tenant
from tenants.redis_store import get_ingest_redis, get_redis
from tenants.reports.rollups import compare_rollups, rebuild_rollups
from tenants.settings import get_settings
from tenants.tracking.buffer import holds_entries_until, shard
from tenants.tracking.cookieless import (
    SALT_TTL_SECONDS,
    cookieless_hit,
    count_cookieless,
    day_salt,
    salt_key,
    visitor_hash,
)
from tenants.tracking.hits import Envelope, Hit
from tests.conftest import (
    SiteHandle,
    TenantHandle,
    make_site,
    start_beat,
    stop,
    token_after,
    wait_stored,
    wait_until,
)
from tests.support.conversions import BROWSER, ORIGIN
from tests.support.dashboard import login_http
from tests.support.partners import collect, hit
from tests.support.privacy import rows_with_uuids, text_matches


def test_a_sites_consent_mode_is_none_by_default_settable_and_validated(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Modes")
    plain = client.post("/api/v1/sites", json={"name": "Shop", "allowed_origins": [ORIGIN]}, headers=tenant.headers)
    assert plain.status_code == 201 and plain.json()["consent_mode"] == "none"
    changed = client.patch(
        f"/api/v1/sites/{plain.json()['id']}", json={"consent_mode": "opt_in"}, headers=tenant.headers
    )
    assert changed.status_code == 200 and changed.json()["consent_mode"] == "opt_in"
    assert client.get(f"/api/v1/sites/{plain.json()['id']}", headers=tenant.headers).json()["consent_mode"] == "opt_in"
    wrong = client.post(
        "/api/v1/sites",
        json={"name": "Shop", "allowed_origins": [ORIGIN], "consent_mode": "maybe"},
        headers=tenant.headers,
    )
    assert wrong.status_code in (400, 422) and "consent_mode" in wrong.text


def _consent(client: Any, site: SiteHandle, **answer: Any) -> Any:
    return client.post(
        f"/t/{site.site_key}/consent",
        content=json.dumps(answer),
        headers={"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"},
    )


def _visits(tenant: TenantHandle) -> list[str]:
    with tenant_session(tenant.tenant_id) as session:
        return [str(hit_id) for hit_id in session.execute(text("SELECT hit_id FROM visits")).scalars()]


def _visitor_rows(tenant: TenantHandle) -> int:
    with tenant_session(tenant.tenant_id) as session:
        return int(session.execute(text("SELECT count(*) FROM visitors")).scalar() or 0)


@pytest.mark.usefixtures("pipeline")
def test_an_opt_in_site_keeps_nothing_of_a_browser_until_it_consents_and_forgets_it_when_it_withdraws(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Optin")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")

    before = collect(client, site, hit("/?utm_source=news"))
    assert before.status_code == 202 and "token" not in before.json(), "no token before consent"

    granted = _consent(client, site, analytics=True)
    assert granted.status_code == 200, granted.text
    assert granted.json()["analytics"] is True and granted.json()["analytics_changed_at"]
    token = granted.json()["token"]
    landing = hit("/?utm_source=news")
    assert collect(client, site, landing, token=token).status_code == 202
    wait_stored(tenant.tenant_id, 1)
    assert _visits(tenant) == [landing["hit_id"]], "the hit before consent was stored"
    assert _visitor_rows(tenant) == 1

    withdrawn = _consent(client, site, analytics=False, token=token)
    assert withdrawn.status_code == 200 and withdrawn.json()["forgotten"] is True
    assert _visits(tenant) == [] and _visitor_rows(tenant) == 0
    after = collect(client, site, hit("/later"), token=token)
    assert after.status_code == 202 and after.json() == {"accepted": 0}
    with tenant_session(tenant.tenant_id) as session:
        row = session.execute(text("SELECT analytics, analytics_source FROM visitor_consents")).one()
    assert tuple(row) == (False, "tracker"), "the withdrawal is recorded"


def test_hits_still_waiting_for_ingest_when_the_browser_withdraws_are_forgotten_once_stored(
    client: Any, worker: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    """A page view accepted just before the withdrawal is stored after the withdrawal deleted the history: it
    must not bring the browser back. Ingest is held (no beat) while the browser withdraws."""
    tenant = make_tenant("Inflight")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")
    token = _consent(client, site, analytics=True).json()["token"]
    beat = start_beat()
    try:
        assert collect(client, site, hit("/?utm_source=news"), token=token).status_code == 202
        wait_stored(tenant.tenant_id, 1)
    finally:
        stop(beat)
    in_flight = hit("/pricing")
    assert collect(client, site, in_flight, token=token).status_code == 202
    withdrawn = _consent(client, site, analytics=False, token=token)
    assert withdrawn.status_code == 200 and withdrawn.json()["forgotten"] is True
    assert _visits(tenant) == [] and _visitor_rows(tenant) == 0
    beat = start_beat()
    try:
        now_ms = int(time.time() * 1000)
        wait_until(lambda: not holds_entries_until(get_redis(), now_ms, shard_count=1), 60, "ingest drained")
        wait_until(lambda: _visits(tenant) == [] and _visitor_rows(tenant) == 0, 60, "the late page view forgotten")
    finally:
        stop(beat)


@pytest.mark.usefixtures("pipeline")
def test_an_opt_out_site_tracks_until_the_visitor_refuses(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Optout")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_out")
    token = token_after(collect(client, site, hit("/")), None)
    wait_stored(tenant.tenant_id, 1)

    assert _consent(client, site, analytics=False, token=token).json()["forgotten"] is True
    assert _visits(tenant) == []
    assert collect(client, site, hit("/again"), token=token).json() == {"accepted": 0}


def test_a_consent_call_without_an_answer_is_refused_with_a_reason(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    site = make_site(make_tenant("Blank"), [ORIGIN], consent_mode="opt_in")
    answer = _consent(client, site)
    assert answer.status_code == 400 and "analytics" in answer.json()["detail"]
    refused_unknown = _consent(client, site, analytics=False)
    assert refused_unknown.status_code == 422


def test_the_visitor_cookie_lives_as_long_as_the_tenant_keeps_an_anonymous_visitor(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    from tenants.privacy.retention import set_policy
    from tenants.tracking.sites import forget_site

    tenant = make_tenant("Cookies")
    site = make_site(tenant, [ORIGIN])
    assert '"cookieAge": 34128000' in client.get(f"/t/{site.site_key}.js").text  # 13 months: 395 days
    with tenant_session(tenant.tenant_id) as session:
        set_policy(session, anonymous_visitor_months=2, identified_visit_months=None)
    forget_site(site.site_key)
    assert '"cookieAge": 5184000' in client.get(f"/t/{site.site_key}.js").text  # 60 days
    with tenant_session(tenant.tenant_id) as session:
        set_policy(session, anonymous_visitor_months=24, identified_visit_months=None)
    forget_site(site.site_key)
    assert '"cookieAge": 34560000' in client.get(f"/t/{site.site_key}.js").text  # capped at 400 days


# --- cookieless counting before consent ------------------------------------------------------------

OTHER_BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
MINUTE_MS = 60_000


def _send(client: Any, site: SiteHandle, *hits: dict[str, Any], user_agent: str, token: str | None = None) -> Any:
    return client.post(
        f"/collect/{site.site_key}",
        content=json.dumps({"v": 1, "token": token, "hits": list(hits)}).encode(),
        headers={"Origin": ORIGIN, "User-Agent": user_agent, "Content-Type": "text/plain;charset=UTF-8"},
    )


def _today_base_ms() -> int:
    """A time today (UTC) from which 45 minutes later is still today and not far from now."""
    now = datetime.now(UTC)
    midnight = int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() * 1000)
    return min(max(int(now.timestamp() * 1000) - 50 * MINUTE_MS, midnight + MINUTE_MS), midnight + 23 * 60 * MINUTE_MS)


def _drained() -> None:
    """Every batch accepted so far is stored or counted (ingest deletes an entry once its transaction committed)."""
    sent_by = int(time.time() * 1000)
    wait_until(lambda: not holds_entries_until(get_redis(), sent_by, shard_count=1), 60, "the ingest stream drained")


def _overview(client: Any, tenant: TenantHandle, **filters: str) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    answer = client.get(
        "/api/v1/reports/overview",
        params={"start": today, "end": today, "compare": "false", **filters},
        headers=tenant.headers,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _sources(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {row["value"]: (row["visitors"], row["visits"]) for row in report["breakdowns"]["source"]}


@pytest.mark.usefixtures("pipeline")
def test_an_opt_in_site_counts_browsers_before_consent_without_a_cookie_or_anything_stored(
    client: Any, make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    """Before consent the overview still counts visitors and visits by source, per day, from a salted hash that
    never reaches PostgreSQL; a re-sent batch counts once."""
    tenant = make_tenant("Cookieless")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")
    base = _today_base_ms()
    news = {"utm": {"source": "news", "medium": "email"}}
    # One browser, 5 minutes between its page views: one visitor, one visit.
    first, second = hit("/?utm_source=news", ts=base, **news), hit("/pricing", ts=base + 5 * MINUTE_MS)
    for sent in (first, second):
        answer = _send(client, site, sent, user_agent=BROWSER)
        assert answer.status_code == 202 and answer.json() == {"accepted": 0}, answer.text
        assert "set-cookie" not in answer.headers, "no cookie before consent"
    # Another browser, 40 minutes between its page views: one visitor, two visits.
    _send(client, site, hit("/", ts=base), user_agent=OTHER_BROWSER)
    _send(client, site, hit("/again", ts=base + 40 * MINUTE_MS), user_agent=OTHER_BROWSER)
    assert _send(client, site, second, user_agent=BROWSER).status_code == 202  # the tracker re-sends a batch
    crawler = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert _send(client, site, hit("/", ts=base), user_agent=crawler).status_code == 202
    _drained()

    report = _overview(client, tenant)
    totals = report["totals"]
    assert (totals["visitors"], totals["visits"], totals["pageviews"]) == (2, 3, 4)
    assert totals["cookieless_visitors"] == 2 and totals["new_visitors"] == 0
    assert _sources(report) == {"news": (1, 1), "(direct)": (1, 2)}
    assert sum(point["visitors"] for point in report["series"]) == 2
    channels = {row["value"]: row["visitors"] for row in report["breakdowns"]["channel"]}
    assert channels == {"Email": 1, "Direct": 1}
    assert _overview(client, tenant, source="news")["totals"]["visits"] == 1, "filters narrow them too"

    assert _visits(tenant) == [] and _visitor_rows(tenant) == 0, "nothing stored per browser"

    # The nightly check compares the tracked counts with the visits: the cookieless ones do not upset it, and a
    # rebuild, which derives the tracked counts again, keeps them.
    today = datetime.now(UTC).date()
    with tenant_session(tenant.tenant_id) as session:
        assert compare_rollups(session, today, today) == []
        rebuild_rollups(session, today, today)
    assert _overview(client, tenant)["totals"] == totals
    salt = get_redis().get(salt_key(tenant.tenant_id, datetime.now(UTC).date()))
    assert salt is not None
    hashes = [visitor_hash(salt, site.site_id, None, agent) for agent in (BROWSER, OTHER_BROWSER)]
    assert text_matches(owner_url, tenant.tenant_id, [str(h) for h in hashes] + [h.hex for h in hashes]) == {}
    assert rows_with_uuids(owner_url, tenant.tenant_id, hashes) == {}


def _cookieless_envelope(site: SiteHandle) -> Envelope:
    """One cookieless page view of ``site``, as collect appends it to the ingest stream."""
    return Envelope(
        tenant_id=site.tenant.tenant_id,
        site_id=site.site_id,
        visitor_id=uuid.uuid4(),
        received_at=int(time.time() * 1000),
        hits=[cookieless_hit(Hit(**{**hit("/"), "hit_id": uuid.uuid4()}))],
        cookieless=True,
    )


@pytest.mark.usefixtures("pipeline")
def test_a_replayed_cookieless_entry_counts_once(client: Any, make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Replay")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")
    envelope = _cookieless_envelope(site)
    data = msgspec.json.encode(envelope)
    get_redis().xadd(shard(0).stream, {"d": data})
    _drained()
    get_redis().xadd(shard(0).stream, {"d": data})  # as a dead-letter replay or a redelivery puts it back
    _drained()
    totals = _overview(client, tenant)["totals"]
    assert (totals["visitors"], totals["visits"], totals["pageviews"]) == (1, 1, 1)


@pytest.mark.usefixtures("pipeline")
def test_a_cookieless_entry_redelivered_after_its_counts_committed_but_before_its_mark_counts_once(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    """An ingest worker killed between committing a cookieless batch's counts and marking its hits counted in
    Redis: the entry is delivered again, and must add nothing."""
    tenant = make_tenant("Killed")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")
    envelope = _cookieless_envelope(site)
    with tenant_session(tenant.tenant_id) as session:  # what the killed worker committed, and no mark_counted
        count_cookieless(session, get_ingest_redis(), [envelope])
    get_redis().xadd(shard(0).stream, {"d": msgspec.json.encode(envelope)})  # redelivered to another worker
    _drained()
    totals = _overview(client, tenant)["totals"]
    assert (totals["visitors"], totals["visits"], totals["pageviews"]) == (1, 1, 1)


@pytest.mark.usefixtures("pipeline")
def test_after_consent_the_browser_is_tracked_and_no_longer_counted_cookielessly(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Consents")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")
    assert _send(client, site, hit("/"), user_agent=BROWSER).json() == {"accepted": 0}
    _drained()
    assert _overview(client, tenant)["totals"]["cookieless_visitors"] == 1

    token = _consent(client, site, analytics=True).json()["token"]
    # As tracker.js does: the page view of the page that asked for consent again, now with a token, flagged as
    # counted already; then the next page, a second later (in one millisecond their order would be the random
    # hit ids', and the next page, sorted first, would start the visit).
    resent = hit("/", counted_before_consent=True)
    later = [resent, {**hit("/after"), "ts": resent["ts"] + 1000}]
    assert _send(client, site, *later, token=token, user_agent=BROWSER).status_code == 202
    wait_stored(tenant.tenant_id, 2)
    _drained()
    assert sorted(_visits(tenant)) == sorted(h["hit_id"] for h in later), "tracked from the consent on"
    totals = _overview(client, tenant)["totals"]
    assert totals["cookieless_visitors"] == 1, "the consented browser's hits are not counted cookielessly too"
    assert (totals["visitors"], totals["visits"], totals["pageviews"]) == (1, 1, 2), "one person, one visit"
    assert totals["new_visitors"] == 1, "a new tracked visitor"
    today = datetime.now(UTC).date()
    with tenant_session(tenant.tenant_id) as session:
        assert compare_rollups(session, today, today) == [], "the flag is in the visits, so a scan agrees"

    _consent(client, site, analytics=False, token=token)
    assert _visits(tenant) == []
    refused = _send(client, site, hit("/gone"), token=token, user_agent=BROWSER)
    assert refused.json() == {"accepted": 0}
    _drained()
    assert _overview(client, tenant)["totals"]["cookieless_visitors"] == 1, "a refusal is not counted either"


def test_the_daily_hash_rotates_with_its_salt_which_expires() -> None:
    """The same browser is the same visitor for a day only: another salt (the next day's, random) gives another
    hash, and a salt lives 48 hours at most, so yesterday's hashes cannot be recomputed."""
    site = uuid.uuid4()
    salt, tomorrow = b"a" * 32, b"b" * 32
    same = visitor_hash(salt, site, "203.0.113.7", BROWSER)
    assert visitor_hash(salt, site, "203.0.113.99", BROWSER) == same, "the address is truncated to its /24"
    assert visitor_hash(salt, site, "198.51.100.7", BROWSER) != same, "another address, another visitor"
    assert visitor_hash(salt, site, "203.0.113.7", OTHER_BROWSER) != same
    assert visitor_hash(salt, uuid.uuid4(), "203.0.113.7", BROWSER) != same
    assert visitor_hash(tomorrow, site, "203.0.113.7", BROWSER) != same

    tenant_id, day = uuid.uuid4(), datetime.now(UTC).date()
    client = aioredis.Redis.from_url(get_settings().redis_url or "")

    async def fetch() -> tuple[bytes, bytes]:
        try:
            return await day_salt(client, tenant_id, day), await day_salt(client, uuid.uuid4(), day)
        finally:
            await client.aclose()

    created, other_tenant = asyncio.run(fetch())
    assert len(created) == 32 and created != other_tenant
    stored = get_redis()
    assert stored.get(salt_key(tenant_id, day)) == created
    assert 0 < int(stored.ttl(salt_key(tenant_id, day))) <= SALT_TTL_SECONDS


def test_the_dashboard_overview_counts_visitors_before_consent_and_says_how(
    api_server: Any, pipeline: None, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Cookieboard")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")
    with httpx.Client(base_url=api_server.base_url, timeout=30) as http:
        for agent in (BROWSER, OTHER_BROWSER):
            answer = http.post(
                f"/collect/{site.site_key}",
                content=json.dumps({"v": 1, "hits": [hit("/?utm_source=news", utm={"source": "news"})]}).encode(),
                headers={"Origin": ORIGIN, "User-Agent": agent, "Content-Type": "text/plain;charset=UTF-8"},
            )
            assert answer.status_code == 202 and "set-cookie" not in answer.headers
    _drained()
    today = datetime.now(UTC).date().isoformat()
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page = staff.get("/app", params={"period": "custom", "from": today, "to": today})
    staff.close()
    assert page.status_code == 200, page.text
    assert "2 counted without cookies before consent" in page.text
    assert "counted without cookies or anything stored about them" in page.text
    assert '<a href="/app?' in page.text and ">news</a>" in page.text, "the source table lists them"


def test_the_ids_of_counted_cookieless_hits_go_after_two_days(make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Idsgo")
    with tenant_session(tenant.tenant_id) as session:
        for age in (0, 2, 3):
            session.execute(
                text(
                    """INSERT INTO cookieless_counted_hits (tenant_id, hit_id, counted_on)
                       VALUES (:t, :h, current_date - :age)"""
                ),
                {"t": tenant.tenant_id, "h": uuid.uuid4(), "age": age},
            )
    expire_tenant(tenant.tenant_id)
    with tenant_session(tenant.tenant_id) as session:
        kept = session.execute(text("SELECT current_date - counted_on FROM cookieless_counted_hits")).scalars()
        assert sorted(kept) == [0, 2]
