"""Merge benchmark (``make bench-merge``): a 10,000-visit history merge, and form-submit-to-merged latency.

In one run it

1. creates a fresh test database and Redis database (``tests/services.py``), migrates, and starts the
   real API, one worker (all queues, concurrency 2) and beat;
2. ``merge_ms``: ``MERGE_RUNS`` times, seeds a fresh visitor with ``MERGE_VISITS`` anonymous visits (the
   way ingest stores them), links it to a new contact without queueing anything, and times
   ``merge_visitor_history`` in this process, commits included; checks that every visit moved and that
   the contact got its first touch; reports the median. Interleaved with these runs, the baseline: an
   identically seeded visitor whose visits one plain ``UPDATE`` rewrites in one transaction (what
   PostgreSQL alone pays for 10,000 rows), so ``merge_ratio`` says what batching and touches cost;
3. ``submit_to_merged_p95_ms``: ``--submissions`` times, one at a time, seeds a visitor with
   ``--history`` anonymous visits, posts the form over HTTP with its visitor token, and polls the
   database every ``POLL_SECONDS`` until the visitor's history belongs to the contact and the contact
   has its first touch. The latency runs from just before the POST to the poll that saw the merge
   (so it is at most one poll interval pessimistic). ``WARMUP_SUBMISSIONS`` go first and are not
   counted: they wait for the worker to come up and warm every connection pool on the way.

Forms are rate-limited per IP and tenant (10 a minute), so submissions are spread over tenants,
``SUBMISSIONS_PER_TENANT`` each.

The last two lines of stdout::

    merge_baseline_ms=… merge_ratio=… submit_to_merged_p50_ms=… form_answer_p50_ms=…
    merge_visits=10000 merge_ms=… submit_to_merged_p95_ms=…

(``form_answer`` is the form POST's own response time, the part of the latency before the worker.)

Targets: ``merge_ms`` ≤ 500, p95 ≤ 1000 (reported on stderr, not enforced). The exit status is
non-zero when a merge is incomplete (a visit left without its contact, no first touch, or a
submission not merged within ``MERGED_TIMEOUT_SECONDS``) or a submission is refused.
"""

from __future__ import annotations

import argparse
import math
import secrets
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# tests/ and bench/ are not installed packages: import them from the checkout, however this file runs.
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    BenchError,
    Rig,
    check_stop,
    log,
    owner_connection,
    percentile,
    run_bench,
    trailmark_command,
)

ORIGIN = "https://shop.example"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
FORM_FIELDS = [{"name": "email", "maps_to": "email"}, {"name": "first_name", "maps_to": "first_name"}]
MERGE_VISITS = 10_000
MERGE_RUNS = 3
HITS_PER_ENVELOPE = 1000
HISTORY_DAYS = 14
"""Seeded visits spread over the last two weeks: inside the partitions a migrated database has."""
WARMUP_SUBMISSIONS = 2
SUBMISSIONS_PER_TENANT = 8
"""Below the form rate limit of 10 a minute per IP and tenant."""
POLL_SECONDS = 0.01
MERGED_TIMEOUT_SECONDS = 30
WARMUP_TIMEOUT_SECONDS = 120
MERGE_TARGET_MS = 500
P95_TARGET_MS = 1000
PAGES = ["/", "/pricing", "/features", "/blog/attribution", "/customers", "/pricing#faq", "/docs", "/signup"]


class IncompleteMerge(BenchError):
    """A merge left visits behind or never happened: the exit status says so."""


# --- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormTenant:
    tenant_id: uuid.UUID
    site_id: uuid.UUID
    form_key: str


def create_tenant(name: str) -> FormTenant:
    """A tenant with one site and one form (email and first name, no minimum fill time)."""
    from tenants.accounts.service import signup
    from tenants.forms.service import create_form
    from tenants.isolation import tenant_session
    from tenants.tracking.sites import create_site

    email = f"owner-{secrets.token_hex(4)}@example.com"
    tenant = signup(name=name, owner_email=email, password=secrets.token_urlsafe(18)).tenant
    with tenant_session(tenant.id) as session:
        site = create_site(session, name="Shop", allowed_origins=[ORIGIN])
        form = create_form(session, site_id=site.id, name="Newsletter", fields=FORM_FIELDS, min_fill_seconds=0)
        return FormTenant(tenant.id, site.id, form.form_key)


def seed_history(tenant: FormTenant, visitor_id: uuid.UUID, visits: int) -> None:
    """``visits`` anonymous page views of one browser over the last ``HISTORY_DAYS``, stored the way
    ingest stores them; the first landed from a Google Ads click (its first touch)."""
    from tenants.isolation import tenant_session
    from tenants.tracking.hits import ClickIds, Envelope, Hit, Utm
    from tenants.tracking.ingest import store_envelopes

    now = int(time.time() * 1000)
    start = now - HISTORY_DAYS * 24 * 3600 * 1000
    step = (now - 60_000 - start) // max(visits, 1)
    hits = []
    for index in range(visits):
        page = PAGES[index % len(PAGES)]
        hit_id = uuid.uuid4()
        if index == 0:
            hit = Hit(
                hit_id=hit_id,
                ts=start,
                url=f"{ORIGIN}/?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=abc",
                path="/",
                title="Shop",
                referrer="https://www.google.com/",
                utm=Utm(source="google", medium="cpc", campaign="spring"),
                click_ids=ClickIds(gclid="abc"),
                lang="en-US",
                screen="1920x1080",
            )
        else:
            hit = Hit(
                hit_id=hit_id,
                ts=start + index * step,
                url=f"{ORIGIN}{page}",
                path=page,
                title=f"Shop {page}",
                referrer=f"{ORIGIN}/",
                lang="en-US",
                screen="1920x1080",
            )
        hits.append(hit)
    for offset in range(0, visits, HITS_PER_ENVELOPE):
        chunk = hits[offset : offset + HITS_PER_ENVELOPE]
        envelope = Envelope(
            tenant_id=tenant.tenant_id,
            site_id=tenant.site_id,
            visitor_id=visitor_id,
            received_at=chunk[-1].ts,
            hits=chunk,
            user_agent=USER_AGENT,
            ip="203.0.113.7",
        )
        with tenant_session(tenant.tenant_id) as session:
            store_envelopes(session, [envelope])
        check_stop()


class Inspector:
    """Reads merge state over a connection of its own (autocommit: every poll sees the latest commit)."""

    def __init__(self, owner_url: str) -> None:
        self.connection = owner_connection(owner_url)
        self.tenant_id: uuid.UUID | None = None

    def _as_tenant(self, tenant_id: uuid.UUID) -> None:
        # Tenant tables have FORCE ROW LEVEL SECURITY: read as the tenant, whatever role the owner URL names.
        if tenant_id != self.tenant_id:
            self.connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
            self.tenant_id = tenant_id

    def state(self, tenant_id: uuid.UUID, visitor_id: uuid.UUID) -> tuple[uuid.UUID | None, int, int, bool]:
        """The visitor's contact, its visits still anonymous, its visits with that contact, and whether
        the contact has its first touch."""
        self._as_tenant(tenant_id)
        row = self.connection.execute(
            """SELECT v.contact_id,
                      (SELECT count(*) FROM visits x
                        WHERE x.tenant_id = v.tenant_id AND x.visitor_id = v.id AND x.contact_id IS NULL),
                      (SELECT count(*) FROM visits x
                        WHERE x.tenant_id = v.tenant_id AND x.visitor_id = v.id AND x.contact_id = v.contact_id),
                      coalesce(c.first_touch IS NOT NULL, false)
               FROM visitors v LEFT JOIN contacts c ON c.tenant_id = v.tenant_id AND c.id = v.contact_id
               WHERE v.tenant_id = %s AND v.id = %s""",
            (tenant_id, visitor_id),
        ).fetchone()
        if row is None:
            return None, 0, 0, False
        return row[0], int(row[1]), int(row[2]), bool(row[3])

    def merged(self, tenant_id: uuid.UUID, visitor_id: uuid.UUID) -> bool:
        """The only poll that runs while a merge is awaited: cheap, one round trip."""
        self._as_tenant(tenant_id)
        row = self.connection.execute(
            """SELECT v.contact_id IS NOT NULL AND c.first_touch IS NOT NULL
                      AND NOT EXISTS (SELECT FROM visits x WHERE x.tenant_id = v.tenant_id
                                      AND x.visitor_id = v.id AND x.contact_id IS NULL)
               FROM visitors v LEFT JOIN contacts c ON c.tenant_id = v.tenant_id AND c.id = v.contact_id
               WHERE v.tenant_id = %s AND v.id = %s""",
            (tenant_id, visitor_id),
        ).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        self.connection.close()


# --- the measurements ------------------------------------------------------------------------------


_BASELINE_UPDATE = """UPDATE visits SET contact_id = :c
                       WHERE tenant_id = :t AND visitor_id = :v AND contact_id IS NULL"""
"""The floor: what PostgreSQL alone pays to rewrite the visitor's visits, in one statement and one
transaction, without batches, touches or the event."""


def measure_merge(tenant: FormTenant, inspector: Inspector, *, baseline: bool = False) -> float:
    """Milliseconds ``merge_visitor_history`` takes (commits included) for a fresh visitor with
    ``MERGE_VISITS`` anonymous visits, already linked to its contact as a form submission links it;
    with ``baseline``, the same visits rewritten by :data:`_BASELINE_UPDATE` instead."""
    from sqlalchemy import text

    from tenants.contacts.service import ContactChanges, upsert_by_email
    from tenants.identity.service import merge_visitor_history
    from tenants.isolation import tenant_session
    from tenants.models import new_id

    visitor_id = new_id()
    seed_history(tenant, visitor_id, MERGE_VISITS)
    with tenant_session(tenant.tenant_id) as session:
        contact, _ = upsert_by_email(
            session, ContactChanges(email=f"merge-{secrets.token_hex(4)}@example.com", first_name="Monica")
        )
        # What link_visitor does, minus the outbox message: the worker must not merge it meanwhile.
        session.execute(
            text(
                """UPDATE visitors SET contact_id = :c, evidence = 'form', identified_at = now()
                   WHERE tenant_id = :t AND id = :v"""
            ),
            {"c": contact.id, "t": tenant.tenant_id, "v": visitor_id},
        )
        contact_id = contact.id
    started = time.perf_counter()
    with tenant_session(tenant.tenant_id) as session:
        if baseline:
            params = {"c": contact_id, "t": tenant.tenant_id, "v": visitor_id}
            moved = session.execute(text(_BASELINE_UPDATE), params).rowcount  # type: ignore[attr-defined]
        else:
            moved = merge_visitor_history(session, visitor_id, contact_id)
    elapsed_ms = (time.perf_counter() - started) * 1000
    linked, anonymous, merged, first_touch = inspector.state(tenant.tenant_id, visitor_id)
    first_touch = first_touch or baseline  # the baseline does not refresh touches
    if moved != MERGE_VISITS or anonymous or merged != MERGE_VISITS or linked != contact_id or not first_touch:
        raise IncompleteMerge(
            f"{'baseline' if baseline else 'merge'} of {MERGE_VISITS} visits: moved {moved}, {merged} with the "
            f"contact, {anonymous} still anonymous, first touch {'set' if first_touch else 'missing'}"
        )
    return elapsed_ms


@dataclass
class Submission:
    latency_ms: float
    response_ms: float
    polls: int


def submit_and_wait(
    client: Any, api_url: str, tenant: FormTenant, inspector: Inspector, *, history: int, timeout: float
) -> Submission:
    """Seed a browser's anonymous history, submit the form with its token, wait until it is merged."""
    from tenants.tracking.visitors import visitor_of_browser

    browser = visitor_of_browser(tenant.tenant_id, first_hit=(uuid.uuid4(), int(time.time() * 1000)))
    seed_history(tenant, browser.visitor_id, history)
    body = {
        "email": f"visitor-{secrets.token_hex(5)}@example.com",
        "first_name": "Monica",
        "tm_started": str(int(time.time() * 1000) - 5000),
        "tm_token": browser.token,
        "tm_page": f"{ORIGIN}/signup",
    }
    started = time.perf_counter()
    response = client.post(f"{api_url}/f/{tenant.form_key}", data=body)
    response_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchError(f"the form answered {response.status_code}: {response.text[:500]}")
    polls = 0
    while True:
        polls += 1
        merged = inspector.merged(tenant.tenant_id, browser.visitor_id)
        # Stamped after the answer: the merge committed no later than this.
        elapsed = time.perf_counter() - started
        if merged:
            break
        if elapsed > timeout:
            linked, anonymous, moved, first_touch = inspector.state(tenant.tenant_id, browser.visitor_id)
            raise IncompleteMerge(
                f"not merged {timeout:.0f} s after the submission: contact {linked}, {moved} visits moved, "
                f"{anonymous} still anonymous, first touch {'set' if first_touch else 'missing'}"
            )
        check_stop()
        time.sleep(POLL_SECONDS)
    linked, anonymous, moved, first_touch = inspector.state(tenant.tenant_id, browser.visitor_id)
    if anonymous or moved != history or not first_touch:
        raise IncompleteMerge(f"merged {moved} of {history} visits ({anonymous} still anonymous)")
    return Submission(elapsed * 1000, response_ms, polls)


def run(bench: Rig, args: argparse.Namespace) -> int:
    env = bench.start_services()
    # The API, one worker on every queue and beat, as `trailmark run` starts them.
    api_url = bench.start_api(env)
    bench.start("worker", trailmark_command("worker", "--concurrency", "2"), env)
    bench.start("beat", trailmark_command("beat"), env)
    inspector = Inspector(bench.owner_url)
    try:
        merge_tenant = create_tenant("Bench merge")
        merge_times, baseline_times = [], []
        for run_number in range(1, MERGE_RUNS + 1):
            bench.check_running()
            # Interleaved, so that drift (checkpoints, autovacuum) weighs on both alike.
            baseline_times.append(measure_merge(merge_tenant, inspector, baseline=True))
            merge_times.append(measure_merge(merge_tenant, inspector))
            log(
                f"run {run_number}/{MERGE_RUNS}: {MERGE_VISITS} visits merged in {merge_times[-1]:.0f} ms "
                f"(baseline, one UPDATE: {baseline_times[-1]:.0f} ms)"
            )
        merge_ms, baseline_ms = statistics.median(merge_times), statistics.median(baseline_times)
        bench.check_running()

        import httpx

        headers = {"Origin": ORIGIN, "Accept": "application/json", "User-Agent": USER_AGENT}
        total = WARMUP_SUBMISSIONS + args.submissions
        tenants = [create_tenant(f"Bench forms {index}") for index in range(math.ceil(total / SUBMISSIONS_PER_TENANT))]
        results: list[Submission] = []
        with httpx.Client(headers=headers, timeout=30) as client:
            for index in range(total):
                warmup = index < WARMUP_SUBMISSIONS
                tenant = tenants[index // SUBMISSIONS_PER_TENANT]
                timeout = WARMUP_TIMEOUT_SECONDS if warmup else MERGED_TIMEOUT_SECONDS
                submission = submit_and_wait(client, api_url, tenant, inspector, history=args.history, timeout=timeout)
                if warmup:
                    log(f"warm-up submission merged after {submission.latency_ms:.0f} ms")
                else:
                    results.append(submission)
                bench.check_running()
    finally:
        inspector.close()

    latencies = [result.latency_ms for result in results]
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    responses = [result.response_ms for result in results]
    log(
        f"{len(results)} submissions of a browser with {args.history} visits: submit to merged "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(latencies):.0f} ms; form answer "
        f"p50 {percentile(responses, 0.5):.0f} ms, p95 {percentile(responses, 0.95):.0f} ms"
    )
    log(
        f"merges of {MERGE_VISITS} visits: {', '.join(f'{value:.0f}' for value in merge_times)} ms; "
        f"baseline {', '.join(f'{value:.0f}' for value in baseline_times)} ms"
    )
    for name, value, target in (("merge_ms", merge_ms, MERGE_TARGET_MS), ("p95", p95, P95_TARGET_MS)):
        if value > target:
            log(f"{name} {value:.0f} misses its target of {target}")
    print(
        f"merge_baseline_ms={baseline_ms:.0f} merge_ratio={merge_ms / baseline_ms:.2f} "
        f"submit_to_merged_p50_ms={p50:.0f} form_answer_p50_ms={percentile(responses, 0.5):.0f}"
    )
    print(f"merge_visits={MERGE_VISITS} merge_ms={merge_ms:.0f} submit_to_merged_p95_ms={p95:.0f}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=40, help="measured form submissions (default 40)")
    parser.add_argument("--history", type=int, default=20, help="anonymous visits per submitting browser (default 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.submissions < 1 or args.history < 1:
        log("--submissions and --history must be at least 1")
        return 2
    rig = Rig()
    return run_bench(rig, lambda: run(rig, args))


if __name__ == "__main__":
    sys.exit(main())
