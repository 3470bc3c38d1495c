"""Retention benchmark (``make bench-retention``): the expiry job while collect is under load, and one erase.

In one run it

1. creates a fresh test database and Redis database, migrates, and registers one tenant with one site;
2. stores ``--visits`` expired anonymous visits (browsers last seen 14 months ago, ``--visits-per-visitor``
   each) among as many live ones (seen today), straight in SQL;
3. starts the real API, one ingest worker and beat, and lands browsers for visitor tokens (as
   ``bench/collect.py`` does);
4. loads a bare Litestar endpoint alone (the baseline), then collect with the identical wrk script while the
   expiry (``tenants.privacy.retention.expire_tenant``, what beat's hourly job runs for each tenant) deletes
   the expired ones in this process;
5. checks that every expired visit is gone and every live one is still there, then stores a contact with
   10,000 visits on 5 devices and times its erase (``request_erasure`` + ``erase_person``, what the worker
   runs).

The last line of stdout::

    expired=… expire_s=… collect_ratio=… collect_p99_ms=… erase_ms=…

``collect_ratio`` is collect's successful answers per second during the expiry over the bare endpoint's. The
targets (every expired row gone and no live one; ratio ≥ 0.5; p99 ≤ 50 ms; erase ≤ 10 s) are checked; the exit
status is non-zero and the line before the last says which was missed.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.collect import Bench as CollectBench  # noqa: E402
from bench.collect import land_browsers, page_view, write_lua_script  # noqa: E402
from bench.harness import (  # noqa: E402
    BenchError,
    ensure_wrk,
    load_bench_main,
    load_bench_parser,
    log,
    owner_connection,
    trailmark_command,
)

WARMUP_VISITORS = 200
EXPIRY_DELAY_SECONDS = 2.0
"""The expiry starts once collect's load is under way."""
ERASE_VISITS = 10_000
ERASE_DEVICES = 5
SEED_CHUNK = 100_000
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_ERASE_MS = 10_000.0

_SEED = """WITH v AS (
    INSERT INTO visitors (tenant_id, id, site_id, contact_id, first_seen_at, last_seen_at, visit_count, created_at)
    SELECT %(tenant)s, gen_random_uuid(), %(site)s, %(contact)s, at, at, %(per)s, at
    FROM generate_series(1, %(visitors)s), (SELECT now() - %(age)s::interval AS at) a
    RETURNING id, last_seen_at)
INSERT INTO visits (tenant_id, hit_id, occurred_at, received_at, visitor_id, site_id, contact_id, type, url, path,
                    click_ids, ad_cookies, is_bot)
SELECT %(tenant)s, gen_random_uuid(), v.last_seen_at - make_interval(secs => k), v.last_seen_at, v.id, %(site)s,
       %(contact)s, 'pageview', 'https://shop.example/seeded?utm_source=google', '/seeded', '{}', '{}', false
FROM v, generate_series(1, %(per)s) k"""


class Bench(CollectBench):
    def run(self) -> int:
        wrk = ensure_wrk()
        env = self.start_services()
        tenant_id, site_key = self.create_site()
        site_id = self.site_of(tenant_id)
        per = self.args.visits_per_visitor
        visitors = max(1, self.args.visits // per)
        log(f"storing {visitors * per} expired and {visitors * per} live visits ({per} per browser)")
        self.seed(tenant_id, site_id, visitors, per, age="14 months")
        self.seed(tenant_id, site_id, visitors, per, age="1 hour")

        workers = str(self.args.api_workers)
        api_url = self.start_api(env, "--workers", workers)
        self.start("worker", trailmark_command("worker", "--queues", "ingest", "--concurrency", "1"), env)
        self.start("beat", trailmark_command("beat"), env)
        collect_path = f"/collect/{site_key}"
        tokens = land_browsers(api_url + collect_path, WARMUP_VISITORS)
        script = self.workdir / "collect.lua"
        write_lua_script(script, self.args.seconds, tokens)

        from tenants.embedded import free_port

        bare_port = free_port()
        self.start(
            "bare",
            [sys.executable, "-m", "bench.collect", "--serve-bare", str(bare_port), "--api-workers", workers],
            env,
        )
        bare_url = f"http://127.0.0.1:{bare_port}{collect_path}"
        from bench.collect import _post_status

        self.wait_until_answers("bare", lambda: _post_status(bare_url, page_view(None, str(uuid.uuid4()), 0)) == 204)
        bare = self.load(wrk, script, bare_url, "bare", range(200, 300), server="bare")
        self.stop("bare")

        expiry: dict[str, float] = {}
        worker = threading.Thread(target=self.expire, args=(tenant_id, expiry), daemon=True)
        worker.start()
        collect = self.load(wrk, script, api_url + collect_path, "collect", range(202, 203), server="api")
        worker.join()
        if "error" in expiry:
            raise BenchError(f"the expiry failed: {expiry['error']}")
        if expiry["seconds"] > self.args.seconds:
            log(f"the expiry ran {expiry['seconds']:.1f} s, longer than the {self.args.seconds} s load window")

        expired_left, live_left = self.count_left(tenant_id)
        erase_ms = self.time_erase(tenant_id, site_id)
        ratio = collect.rps / bare.rps if bare.rps else 0.0
        missed = []
        if expired_left:
            missed.append(f"{expired_left} expired visits left")
        if live_left != visitors * per:
            missed.append(f"{live_left} of {visitors * per} live visits left")
        if int(expiry["visits"]) != visitors * per:
            missed.append(f"the expiry deleted {int(expiry['visits'])} visits, not {visitors * per}")
        if ratio < TARGET_RATIO:
            missed.append(f"collect ratio {ratio:.2f} < {TARGET_RATIO}")
        if collect.p99_ms > TARGET_P99_MS:
            missed.append(f"collect p99 {collect.p99_ms:.1f} ms > {TARGET_P99_MS:.0f} ms")
        if erase_ms > TARGET_ERASE_MS:
            missed.append(f"erase {erase_ms:.0f} ms > {TARGET_ERASE_MS:.0f} ms")
        if collect.errors:
            missed.append(f"collect had {collect.errors} failed requests")
        print(
            f"collect_rps={collect.rps:.0f} bare_rps={bare.rps:.0f} expired_visitors={int(expiry['visitors'])} "
            f"live_left={live_left} api_workers={workers}"
        )
        print(
            f"expired={int(expiry['visits'])} expire_s={expiry['seconds']:.1f} collect_ratio={ratio:.2f} "
            f"collect_p99_ms={collect.p99_ms:.1f} erase_ms={erase_ms:.0f}"
        )
        if missed:
            log("MISSED: " + "; ".join(missed))
            return 1
        return 0

    def site_of(self, tenant_id: uuid.UUID) -> uuid.UUID:
        with owner_connection(self.owner_url) as connection:
            connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
            row = connection.execute("SELECT id FROM sites WHERE tenant_id = %s", (tenant_id,)).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    def seed(
        self,
        tenant_id: uuid.UUID,
        site_id: uuid.UUID,
        visitors: int,
        per: int,
        *,
        age: str,
        contact_id: uuid.UUID | None = None,
    ) -> None:
        with owner_connection(self.owner_url) as connection:
            connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
            connection.execute(
                "SELECT trailmark_ensure_visit_partitions((now() - %s::interval - interval '1 month')::date, 3)",
                (age,),
            )
            chunk = max(1, SEED_CHUNK // per)
            for start in range(0, visitors, chunk):
                params = {
                    "tenant": tenant_id,
                    "site": site_id,
                    "contact": contact_id,
                    "per": per,
                    "visitors": min(chunk, visitors - start),
                    "age": age,
                }
                connection.execute(_SEED, params)
            connection.execute("ANALYZE visitors")
            connection.execute("ANALYZE visits")

    def expire(self, tenant_id: uuid.UUID, result: dict[str, float]) -> None:
        from tenants.privacy.retention import expire_tenant

        time.sleep(EXPIRY_DELAY_SECONDS)
        started = time.monotonic()
        try:
            done = expire_tenant(tenant_id)
        except Exception as error:
            result["error"] = 1.0
            log(f"expiry failed: {error!r}")
            return
        result.update(seconds=time.monotonic() - started, visitors=done.visitors, visits=done.visits)
        log(f"expired {done.visitors} visitors and {done.visits} visits in {result['seconds']:.1f} s")

    def count_left(self, tenant_id: uuid.UUID) -> tuple[int, int]:
        """Seeded visits still stored: expired ones (last seen 14 months ago) and live ones (an hour ago)."""
        with owner_connection(self.owner_url) as connection:
            connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
            expired, live = connection.execute(
                """SELECT count(*) FILTER (WHERE occurred_at < now() - interval '13 months'),
                          count(*) FILTER (WHERE url = 'https://shop.example/seeded?utm_source=google'
                                           AND occurred_at >= now() - interval '13 months')
                   FROM visits WHERE tenant_id = %s""",
                (tenant_id,),
            ).fetchone()
        return int(expired), int(live)

    def time_erase(self, tenant_id: uuid.UUID, site_id: uuid.UUID) -> float:
        from tenants.contacts.service import ContactChanges, upsert_by_email
        from tenants.isolation import tenant_session
        from tenants.privacy.erase import erase_person, request_erasure

        with tenant_session(tenant_id) as session:
            contact, _ = upsert_by_email(session, ContactChanges(email="erase-me@example.com", first_name="Erin"))
        self.seed(tenant_id, site_id, ERASE_DEVICES, ERASE_VISITS // ERASE_DEVICES, age="1 day", contact_id=contact.id)
        log(f"erasing a contact with {ERASE_VISITS} visits on {ERASE_DEVICES} devices")
        started = time.monotonic()
        with tenant_session(tenant_id) as session:
            erasure = request_erasure(session, contact.id, via="api", requested_by="bench")
        with tenant_session(tenant_id) as session:
            done = erase_person(session, erasure.id)
        elapsed_ms = (time.monotonic() - started) * 1000
        deleted = (done.report.get("deleted", {}) if done else {}).get("visits", 0)
        if deleted != ERASE_VISITS:
            raise BenchError(f"the erase deleted {deleted} visits, not {ERASE_VISITS}")
        return elapsed_ms


def main(argv: list[str] | None = None) -> int:
    parser = load_bench_parser(__doc__ or "", seconds=30)
    parser.add_argument(
        "--visits", type=int, default=2_000_000, help="expired visits, and as many live ones (default 2,000,000)"
    )
    parser.add_argument("--visits-per-visitor", type=int, default=4, help="visits per browser (default 4)")
    args = parser.parse_args(argv)
    if args.visits < 1 or args.visits_per_visitor < 1:
        log("--visits and --visits-per-visitor must be at least 1")
        return 2
    return load_bench_main(args, "bench.collect:create_bare_app", Bench)


if __name__ == "__main__":
    sys.exit(main())
