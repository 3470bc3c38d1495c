"""Conversions to ad platforms: how fast queued conversions reach Meta and Google, and how long one waits.

The platforms are the tests' fakes (``tests/support/ad_platforms.py``: real HTTP on 127.0.0.1, every request
checked), with every 10th request of a destination answered 429 or 503 once. A real worker and beat deliver.

1. Throughput: ``--conversions`` conversions, each queued for Meta and for Google, are stored at once (as the
   record task stores them); events_per_s is deliveries over the time until none is queued.
2. Lag: ``--steady-rate`` conversions a second for ``--steady-seconds``; p95_lag_ms is sent_at - created_at.

Last line: ``conversions=… delivered=… duplicates=0 lost=0 events_per_s=… p95_lag_ms=…``. Targets: all delivered,
0 duplicates (copies of an event id beyond the first at the fakes), ≥ 2,000 events/s, p95 lag ≤ 5 s at 200/s.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

# tests/ and bench/ are not installed packages: import them from the checkout, however this file runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import BenchError, Rig, log, owner_connection, percentile, run_bench, trailmark_command

EVENTS_PER_S_TARGET = 2000
LAG_P95_TARGET_MS = 5000
_INSERT = """
WITH c AS (
    INSERT INTO conversions (tenant_id, id, kind, event_name, source_key, event_id, occurred_at, page_url,
        user_agent, ip, touches, created_at)
    SELECT %(t)s, gen_random_uuid(), 'custom', 'bench_signup', %(run)s::text || ':' || g,
        md5(%(run)s::text || ':' || g), now(), 'https://shop.example/signup', 'Mozilla/5.0 (bench)', '203.0.113.0',
        jsonb_build_object(
            'meta', jsonb_build_object('source', 'converting_visit', 'click_ids', jsonb_build_object('fbclid',
                'IwAR' || g), 'ad_cookies', '{}'::jsonb, 'clicked_at', jsonb_build_object('fbclid', %(clicked)s::text)),
            'google_ads', jsonb_build_object('source', 'converting_visit', 'click_ids', jsonb_build_object('gclid',
                'Cj0' || g), 'ad_cookies', '{}'::jsonb, 'clicked_at', jsonb_build_object('gclid', %(clicked)s::text))),
        clock_timestamp()
    FROM generate_series(%(first)s::int, %(last)s::int) AS g
    RETURNING id, created_at)
INSERT INTO conversion_deliveries (tenant_id, integration_id, conversion_id, status, next_attempt_at, created_at)
SELECT %(t)s, i, c.id, 'queued', c.created_at, c.created_at FROM c, unnest(%(integrations)s::uuid[]) AS i
"""


def _setup(fake: Any) -> tuple[str, list[str]]:
    """A tenant with a Meta pixel and a Google Ads account (taking the bench's custom event)."""
    from tenants.accounts.service import signup
    from tenants.conversions.integrations import create_integration
    from tenants.isolation import tenant_session
    from tenants.models import Platform

    tenant = signup(name="Bench ads", owner_email="owner@bench-ads.example", password="correct horse battery")
    pixel, customer = "4242424242", "1234567890"
    meta_token, refresh = f"EAAbench{secrets.token_hex(8)}", f"1//bench-{secrets.token_hex(8)}"
    fake.meta_tokens[pixel] = meta_token
    fake.google_refresh[refresh] = customer
    events = {"lead": False, "purchase": False, "complete_registration": False, "custom": ["bench_signup"]}
    with tenant_session(tenant.tenant.id) as session:
        meta = create_integration(
            session, Platform.META, settings={"pixel_id": pixel}, secrets={"access_token": meta_token}, events=events
        )
        google = create_integration(
            session,
            Platform.GOOGLE_ADS,
            settings={"customer_id": customer, "conversion_actions": {"bench_signup": "777"}},
            secrets={"refresh_token": refresh},
            events=events,
        )
        ids = [str(meta.id), str(google.id)]
    return str(tenant.tenant.id), ids


class _Store:
    def __init__(self, owner_url: str, tenant_id: str) -> None:
        self.connection = owner_connection(owner_url)
        self.connection.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant_id,))
        self.tenant_id = tenant_id

    def insert(self, run: str, first: int, last: int, integrations: list[str]) -> None:
        clicked = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))
        self.connection.execute(
            _INSERT,
            {"t": self.tenant_id, "run": run, "first": first, "last": last, "integrations": integrations,
             "clicked": clicked},
        )  # fmt: skip

    def queued(self) -> int:
        row = self.connection.execute("SELECT count(*) FROM conversion_deliveries WHERE status = 'queued'").fetchone()
        return int(row[0])

    def statuses(self, run: str) -> dict[str, int]:
        rows = self.connection.execute(
            """SELECT d.status, count(*) FROM conversion_deliveries d JOIN conversions c ON c.id = d.conversion_id
               WHERE c.source_key LIKE %s GROUP BY d.status""",
            (f"{run}:%",),
        ).fetchall()
        return {status: int(n) for status, n in rows}

    def lags_ms(self, run: str) -> list[float]:
        rows = self.connection.execute(
            """SELECT extract(epoch FROM d.sent_at - c.created_at) * 1000 FROM conversion_deliveries d
               JOIN conversions c ON c.id = d.conversion_id WHERE c.source_key LIKE %s AND d.sent_at IS NOT NULL""",
            (f"{run}:%",),
        ).fetchall()
        return [float(lag) for (lag,) in rows]


def _wait_delivered(rig: Rig, store: _Store, timeout: float) -> float:
    started = time.monotonic()
    while store.queued():
        rig.check_running()
        if time.monotonic() - started > timeout:
            raise BenchError(f"{store.queued()} deliveries still queued after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def run(rig: Rig, args: argparse.Namespace) -> int:
    from tenants.embedded import free_port
    from tests.support.ad_platforms import FakeAdPlatforms

    fake = FakeAdPlatforms(free_port())
    fake.flaky_every = 10
    base = f"http://127.0.0.1:{fake.server.server_address[1]}"
    env = rig.start_services()
    env.update(
        TRAILMARK_META_API_URL=f"{base}/meta",
        TRAILMARK_GOOGLE_ADS_API_URL=f"{base}/google",
        TRAILMARK_GOOGLE_OAUTH_TOKEN_URL=f"{base}/google/token",
        # The sender refreshes Google's access token through the OAuth client: without one it pauses Google.
        TRAILMARK_GOOGLE_CLIENT_ID=fake.client_id,
        TRAILMARK_GOOGLE_CLIENT_SECRET=fake.client_secret,
        TRAILMARK_CONVERSIONS_FLUSH_MS=str(args.flush_ms),
        TRAILMARK_LOG_LEVEL="warning",  # a line per delivered event would measure logging
    )
    try:
        tenant_id, integrations = _setup(fake)
        rig.start("worker", trailmark_command("worker", "--queues", "conversions", "--concurrency", "2"), env)
        rig.start("beat", trailmark_command("beat"), env)
        store = _Store(rig.owner_url, tenant_id)
        burst = f"burst-{secrets.token_hex(3)}"
        log(f"storing {args.conversions} conversions for Meta and Google")
        started = time.monotonic()
        for first in range(1, args.conversions + 1, 5000):
            store.insert(burst, first, min(first + 4999, args.conversions), integrations)
        drained = _wait_delivered(rig, store, timeout=max(120.0, args.conversions / 100))
        burst_s = time.monotonic() - started
        deliveries = args.conversions * len(integrations)
        events_per_s = deliveries / burst_s
        log(f"{deliveries} deliveries in {burst_s:.1f} s ({drained:.1f} s after the last insert)")

        steady = f"steady-{secrets.token_hex(3)}"
        log(f"{args.steady_rate} conversions/s for {args.steady_seconds} s")
        tick, sent, steady_started = 0.1, 0, time.monotonic()
        while time.monotonic() - steady_started < args.steady_seconds:
            due = int((time.monotonic() - steady_started) * args.steady_rate)
            if due > sent:
                store.insert(steady, sent + 1, due, integrations)
                sent = due
            time.sleep(tick)
        _wait_delivered(rig, store, timeout=120)
        lags = store.lags_ms(steady)
        p95_lag = percentile(lags, 0.95) if lags else float("nan")

        statuses = {k: store.statuses(burst).get(k, 0) + store.statuses(steady).get(k, 0) for k in ("sent", "failed")}
        total = (args.conversions + sent) * len(integrations)
        accepted = {
            key
            for key, event in fake.accepted.items()
            if event["_destination"] in ("meta:4242424242", "google:1234567890")
        }
        copies = sum(fake.received[key] for key in accepted)
        duplicates = copies - len(accepted)
        lost = total - len(accepted)
        log(f"statuses {statuses}; fake requests {dict(fake.requests)}; batch sizes max "
            f"{ {k: max(v) for k, v in fake.batch_sizes.items()} }")  # fmt: skip
    finally:
        fake.close()
    misses = []
    if lost or statuses["sent"] != total:
        misses.append(f"{lost} lost, {statuses['failed']} failed")
    if duplicates:
        misses.append(f"{duplicates} duplicates")
    if events_per_s < EVENTS_PER_S_TARGET:
        misses.append(f"events_per_s {events_per_s:.0f} < {EVENTS_PER_S_TARGET}")
    if not p95_lag <= LAG_P95_TARGET_MS:
        misses.append(f"p95_lag_ms {p95_lag:.0f} > {LAG_P95_TARGET_MS}")
    for miss in misses:
        log(f"target missed: {miss}")
    print(json.dumps({"burst_s": round(burst_s, 1), "steady_conversions": sent, "lags": len(lags)}))
    print(
        f"conversions={args.conversions + sent} delivered={len(accepted)} duplicates={duplicates} lost={lost} "
        f"events_per_s={events_per_s:.0f} p95_lag_ms={p95_lag:.0f}"
    )
    return 1 if lost or duplicates else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversions", type=int, default=100_000, help="burst size (default 100000)")
    parser.add_argument("--steady-rate", type=int, default=200, help="conversions a second (default 200)")
    parser.add_argument("--steady-seconds", type=int, default=30, help="how long (default 30)")
    parser.add_argument("--flush-ms", type=int, default=1000, help="TRAILMARK_CONVERSIONS_FLUSH_MS (default 1000)")
    args = parser.parse_args(argv)
    if args.conversions < 1 or args.steady_rate < 1 or args.steady_seconds < 1:
        log("--conversions, --steady-rate and --steady-seconds must be positive")
        return 2
    rig = Rig()
    return run_bench(rig, lambda: run(rig, args))


if __name__ == "__main__":
    sys.exit(main())
