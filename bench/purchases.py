"""Purchases benchmark (``make bench-purchases``): signed Stripe webhooks under load while the real workers turn
them into purchases (and commissions, once that table exists).

In one run it

1. creates a fresh test database and Redis database (``tests/services.py``), migrates, and sets up one tenant
   whose Stripe webhook endpoint holds its signing secret, a site, and a partner program (last referrer,
   30-day window, 12 recurring months, product ``PRODUCT`` at 20 %) with one approved partner. The browsers
   of ``REFERRED_SHARE`` of the buyers arrived through the partner's link an hour ago: a referral click each,
   stored by ingest's own ``store_envelopes``;
2. starts the real API (``--api-workers`` uvicorn processes), one Celery worker on every queue
   (``--worker-concurrency``) and beat;
3. posts ``--events`` deliveries to the endpoint over ``--connections`` keep-alive connections (httpx on
   asyncio), each signed when it is sent, exactly as Stripe signs. The mix: 5 % ``charge.refunded`` (half
   40 % refunds, half full) of one-time checkouts, 5 % exact re-sends of events already in the run (the same
   body with a fresh signature, as Stripe retries), and of the rest two ``checkout.session.completed`` (paid;
   a subscription's checkout starts it) for every ``invoice.paid`` renewal (two per subscription). They go
   out roughly as Stripe would send them: a renewal after its checkout, a re-send soon after its original, a
   refund soon after its payment and now and then just before it;
4. waits until the workers are done (no event unprocessed, the outbox empty, no task queued or running),
   then checks what is stored.

Measured: ``webhook_rps`` (200 answers over the time from the first request to the last answer), ``p99_ms``
(nearest rank over every delivery, as the client saw it: the client shares the machine), ``api_cpu_us`` (CPU
the API's processes used per delivery: what other load on the machine barely moves), and from the
database: ``stripe_events`` rows against the distinct events sent, ``purchases`` against the distinct orders
(checkouts and renewals), refunds applied in full, and ``duplicates``: events or orders stored more than
once. With a ``commissions`` table: its rows, and ``lag_p95_ms`` from each purchase's webhook answer (the
delivery that stored the event) to the ``created_at`` of the purchase's first commission. ``created_at`` is
stamped before the commit, so the lag may read short by the commit itself. Without the table: commissions=0
and lag_p95_ms=nan, and stderr says why.

The last line of stdout::

    webhook_rps=… p99_ms=… purchases=… commissions=… duplicates=0 lag_p95_ms=…

Targets (stderr says which missed): p99 ≤ 100 ms, every event stored exactly once, lag p95 ≤ 2000 ms. A
delivery without an answer or with a 5xx is sent again a second later, as Stripe retries (up to
``DELIVERY_ATTEMPTS``; stderr and ``failed_attempts`` count them, and the logs are kept). The exit status is
non-zero when an event never got its 200 or got a 4xx, an event or order is stored twice or not at all, a refund
is not applied, an event was refused by the worker, or the workers did not finish within
``SETTLE_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
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
from tests.support import stripe as fake_stripe  # noqa: E402

ORIGIN = "https://shop.example"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
PRODUCT = "prod_bench"
PARTNER_CODE = "pat-bench"
REFERRED_SHARE = 0.3
"""Of the buyers, those whose browser came through the partner's link (and pass its token to Checkout)."""
DUPLICATE_SHARE = 0.05
REFUND_SHARE = 0.05
RENEWALS_PER_SUBSCRIPTION = 2
SEED_CHUNK = 500
SETTLE_TIMEOUT_SECONDS = 600
POLL_SECONDS = 0.5
REQUEST_TIMEOUT_SECONDS = 30
DELIVERY_ATTEMPTS = 3
RETRY_SECONDS = 1.0
P99_TARGET_MS = 100
LAG_P95_TARGET_MS = 2000


# --- the deliveries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """How many events of each kind ``total`` deliveries hold."""

    duplicates: int
    refunds: int
    checkouts: int
    subscriptions: int
    """Checkouts that start a subscription; each has ``RENEWALS_PER_SUBSCRIPTION`` renewals."""

    @classmethod
    def of(cls, total: int) -> Mix:
        duplicates, refunds = round(total * DUPLICATE_SHARE), round(total * REFUND_SHARE)
        orders = total - duplicates - refunds
        subscriptions = orders // 3 // RENEWALS_PER_SUBSCRIPTION
        checkouts = orders - subscriptions * RENEWALS_PER_SUBSCRIPTION
        if checkouts - subscriptions < refunds:
            raise BenchError(f"{total} events leave too few one-time checkouts for {refunds} refunds")
        return cls(duplicates, refunds, checkouts, subscriptions)

    @staticmethod
    def is_referred(checkout: int) -> bool:
        return checkout % 10 < REFERRED_SHARE * 10

    @property
    def referred_buyers(self) -> int:
        return sum(self.is_referred(index) for index in range(self.checkouts))


@dataclass
class Plan:
    """The events of a run in the order they are sent, and what the database must hold afterwards."""

    deliveries: list[dict[str, Any]]
    """Event payloads; a re-sent event is the same dict again (the same body)."""
    orders: dict[str, str] = field(default_factory=dict)
    """External id of each order (checkout session or renewal invoice) → the id of the event that reports it."""
    refunded: dict[str, int] = field(default_factory=dict)
    """Checkout session id → the amount its refund leaves refunded."""
    referred_orders: int = 0

    @property
    def distinct_events(self) -> int:
        return len({event["id"] for event in self.deliveries})


def plan_deliveries(total: int, tokens: list[str], run_id: str, seed: int = 11) -> Plan:
    """``total`` deliveries as described in the module's docstring; ``tokens`` are the referred browsers'."""
    draw = random.Random(seed)
    mix = Mix.of(total)
    duplicates, refunds, checkouts, subscriptions = mix.duplicates, mix.refunds, mix.checkouts, mix.subscriptions
    keyed: list[tuple[float, dict[str, Any]]] = []
    plan = Plan(deliveries=[])
    one_time: list[tuple[float, int, str, int]] = []
    referred = iter(tokens)
    for index in range(checkouts):
        session_id, amount = f"cs_{run_id}_{index}", 1000 + index % 50 * 100
        is_subscription = index < subscriptions
        token = next(referred) if Mix.is_referred(index) else None
        event = fake_stripe.checkout_completed(
            session_id=session_id,
            payment_intent=f"pi_{run_id}_{index}",
            amount_total=amount,
            email=f"buyer-{index}@example.com",
            client_reference_id=token,
            metadata={"trailmark_product": PRODUCT},
            mode="subscription" if is_subscription else "payment",
            subscription=f"sub_{run_id}_{index}" if is_subscription else None,
        )
        # Subscriptions spread over the run, so that renewals (after their checkout) do too.
        key = index * checkouts / subscriptions % checkouts if is_subscription else float(index)
        keyed.append((key, event))
        plan.orders[session_id] = event["id"]
        plan.referred_orders += token is not None
        if is_subscription:
            for renewal in range(1, RENEWALS_PER_SUBSCRIPTION + 1):
                invoice_id = f"in_{run_id}_{index}_{renewal}"
                invoice = fake_stripe.invoice_paid(
                    invoice_id=invoice_id,
                    amount_paid=amount,
                    email=f"buyer-{index}@example.com",
                    subscription=f"sub_{run_id}_{index}",
                    product=PRODUCT,
                )
                keyed.append((key + draw.uniform(20, 400) * renewal, invoice))
                plan.orders[invoice_id] = invoice["id"]
                plan.referred_orders += token is not None
        else:
            one_time.append((key, index, session_id, amount))
    for key, index, session_id, amount in draw.sample(one_time, refunds):
        refunded = amount if index % 2 else amount * 40 // 100
        refund = fake_stripe.charge_refunded(
            charge_id=f"ch_{run_id}_{index}", payment_intent=f"pi_{run_id}_{index}", amount=amount,
            amount_refunded=refunded,
        )  # fmt: skip
        keyed.append((key + draw.uniform(-3, 100), refund))  # a few arrive before their payment
        plan.refunded[session_id] = refunded
    originals = list(keyed)
    for key, event in draw.sample(originals, duplicates):
        keyed.append((key + draw.uniform(1, 200), event))
    keyed.sort(key=lambda item: item[0])
    plan.deliveries = [event for _, event in keyed]
    return plan


@dataclass
class Answer:
    event_id: str
    status: int | None
    """None when the request failed without an answer (the reason is in ``error``)."""
    latency_ms: float
    answered_at: float
    """Wall clock (time.time()) when the answer arrived: compared with the database's timestamps."""
    attempt: int = 1
    stored: bool = False
    """The endpoint said this delivery stored the event (``duplicate`` false)."""
    error: str | None = None


async def post_deliveries(url: str, secret: str, deliveries: list[dict[str, Any]], connections: int) -> list[Answer]:
    """Every delivery, ``connections`` at a time over as many keep-alive connections, signed when sent (the
    signature is good for 300 s: a slow run must not send stale ones)."""
    import httpx

    answers: list[Answer] = []
    queue = iter(deliveries)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async def attempt(client: httpx.AsyncClient, event: dict[str, Any], number: int) -> Answer:
        body, headers = fake_stripe.signed_delivery(event, secret)
        started = time.perf_counter()
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            elapsed = (time.perf_counter() - started) * 1000
            return Answer(event["id"], None, elapsed, time.time(), number, error=type(error).__name__)
        answer = Answer(event["id"], response.status_code, (time.perf_counter() - started) * 1000, time.time(), number)
        if response.status_code == 200:
            answer.stored = response.json().get("duplicate") is False
        else:
            answer.error = response.text[:300]
        return answer

    async def connection(client: httpx.AsyncClient) -> None:
        for event in queue:  # one iterator shared by every connection: each delivery is sent once
            for number in range(1, DELIVERY_ATTEMPTS + 1):
                check_stop()
                answer = await attempt(client, event, number)
                answers.append(answer)
                # As Stripe does: a delivery without an answer, or with a 5xx, is sent again later.
                if answer.status is not None and answer.status < 500:
                    break
                await asyncio.sleep(RETRY_SECONDS)

    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        await asyncio.gather(*(connection(client) for _ in range(connections)))
    return answers


# --- the system under test -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    tenant_id: uuid.UUID
    endpoint_token: str
    secret: str
    referred_tokens: list[str]


def create_shop(referred_browsers: int) -> Shop:
    """The tenant, its Stripe endpoint and secret, the program with its approved partner, and the browsers that
    clicked the partner's link (stored as ingest stores a hit)."""
    from tenants.accounts.service import signup
    from tenants.isolation import dispose_engine, tenant_session
    from tenants.models import CodeKind, PartnerStatus
    from tenants.partners import service as partners
    from tenants.purchases.stripe_webhooks import set_signing_secret
    from tenants.tracking.hits import Envelope, Hit
    from tenants.tracking.ingest import store_envelopes
    from tenants.tracking.sites import create_site
    from tenants.tracking.visitors import visitor_of_browser

    secret = "whsec_" + secrets.token_urlsafe(24)
    tenant = signup(name="Bench purchases", owner_email="bench@example.com", password=secrets.token_urlsafe(18)).tenant
    with tenant_session(tenant.id) as session:
        endpoint_token = set_signing_secret(session, secret).endpoint_token
        site_id = create_site(session, name="Shop", allowed_origins=[ORIGIN]).id
        program = partners.create_program(
            session,
            partners.ProgramSettings(
                name="Friends", landing_url=f"{ORIGIN}/", currency="USD", referrer_rule="last",
                cookie_window_days=30, recurring_months=12,
            ),
        )  # fmt: skip
        partners.set_product(session, program.id, PRODUCT, partners.CommissionRate("percent", 2000), None)
        partner = partners.create_partner(
            session, program_id=program.id, email="pat@partners.example", first_name="Pat",
            status=PartnerStatus.APPROVED,
        )  # fmt: skip
        partners.create_code(session, partner_id=partner.id, code=PARTNER_CODE, kind=CodeKind.LINK)
    clicked_at = int((time.time() - 3600) * 1000)
    tokens = []
    for start in range(0, referred_browsers, SEED_CHUNK):
        envelopes = []
        for number in range(start, min(start + SEED_CHUNK, referred_browsers)):
            hit_id = uuid.uuid4()
            browser = visitor_of_browser(tenant.id, first_hit=(hit_id, clicked_at))
            tokens.append(browser.token)
            hit = Hit(hit_id=hit_id, ts=clicked_at, url=f"{ORIGIN}/?ref={PARTNER_CODE}", path="/",
                      partner_code=PARTNER_CODE)  # fmt: skip
            envelopes.append(
                Envelope(
                    tenant_id=tenant.id, site_id=site_id, visitor_id=browser.visitor_id, received_at=clicked_at,
                    hits=[hit], user_agent=USER_AGENT, ip=f"198.51.100.{number % 250 + 1}",
                )
            )  # fmt: skip
        with tenant_session(tenant.id) as session:
            store_envelopes(session, envelopes)
        check_stop()
    dispose_engine()  # from here on this process only reads, over a connection of its own
    return Shop(tenant.id, endpoint_token, secret, tokens)


class Store:
    """Reads what the workers stored, as the tenant, over an autocommit connection of its own."""

    def __init__(self, owner_url: str, redis_url: str, tenant_id: uuid.UUID) -> None:
        import redis

        self.tenant_id = tenant_id
        self.connection = owner_connection(owner_url)
        # Tenant tables have FORCE ROW LEVEL SECURITY: read as the tenant, whatever role the owner URL names.
        self.connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
        self.redis = redis.Redis.from_url(redis_url)

    def scalar(self, query: str) -> Any:
        row = self.connection.execute(query, {"t": self.tenant_id} if "%(t)s" in query else None).fetchone()
        return row[0] if row else None

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        return list(self.connection.execute(query, {"t": self.tenant_id}).fetchall())

    def work_left(self) -> dict[str, int]:
        """What the workers still have to do; all zero once they are done."""
        from workers.app import QUEUES

        return {
            "unprocessed events": int(
                self.scalar("SELECT count(*) FROM stripe_events WHERE tenant_id = %(t)s AND processed_at IS NULL")
            ),
            "outbox messages": int(self.scalar("SELECT count(*) FROM outbox WHERE tenant_id = %(t)s")),
            "queued tasks": sum(int(self.redis.llen(queue)) for queue in QUEUES),
            # Tasks are acknowledged late (workers/app.py): one being run or prefetched is unacknowledged.
            "running tasks": int(self.redis.hlen("unacked")),
        }

    def has_commissions(self) -> bool:
        return self.scalar("SELECT to_regclass('public.commissions') IS NOT NULL") is True

    def close(self) -> None:
        self.connection.close()
        self.redis.close()


@dataclass
class Stored:
    events: int
    distinct_events: int
    purchases: int
    distinct_orders: int
    """Purchases with distinct (source, external id), among those this run expects."""
    unexpected_purchases: list[str]
    refunds_wrong: list[str]
    refunds_waiting: int
    refused: list[str]
    outcomes: Counter[str]

    @property
    def duplicates(self) -> int:
        """Events or orders stored more than once (their unique keys should make it impossible)."""
        return self.events - self.distinct_events + self.purchases - self.distinct_orders


def read_stored(store: Store, plan: Plan) -> Stored:
    events = store.rows("SELECT id, outcome FROM stripe_events WHERE tenant_id = %(t)s")
    purchases = store.rows(
        "SELECT source, external_id, refunded_amount FROM purchases WHERE tenant_id = %(t)s AND source = 'stripe'"
    )
    refunded = {external_id: amount for _, external_id, amount in purchases}
    return Stored(
        events=len(events),
        distinct_events=len({event_id for event_id, _ in events}),
        purchases=len(purchases),
        distinct_orders=len({(source, external_id) for source, external_id, _ in purchases}),
        unexpected_purchases=[external_id for external_id in refunded if external_id not in plan.orders],
        refunds_wrong=[
            f"{session_id}: {refunded.get(session_id)} instead of {amount}"
            for session_id, amount in plan.refunded.items()
            if refunded.get(session_id) != amount
        ],
        refunds_waiting=int(
            store.scalar("SELECT count(*) FROM purchase_refunds WHERE tenant_id = %(t)s AND purchase_id IS NULL")
        ),
        refused=[f"{event_id}: {outcome}" for event_id, outcome in events if (outcome or "").startswith("refused")],
        outcomes=Counter((outcome or "none").split(":", 1)[0] for _, outcome in events),
    )


def commission_lags(store: Store, plan: Plan, answers: list[Answer]) -> tuple[int, list[float]] | None:
    """The number of commission rows, and per purchase with one the milliseconds from the answer to the
    delivery that stored its event to its first commission's ``created_at``; None without the table."""
    if not store.has_commissions():
        return None
    count = int(store.scalar("SELECT count(*) FROM commissions WHERE tenant_id = %(t)s"))
    firsts = store.rows(
        """SELECT p.external_id, extract(epoch FROM min(c.created_at))
           FROM commissions c JOIN purchases p ON p.tenant_id = c.tenant_id AND p.id = c.purchase_id
           WHERE c.tenant_id = %(t)s GROUP BY p.external_id"""
    )
    stored_at = {answer.event_id: answer.answered_at for answer in answers if answer.stored}
    lags = [
        (float(created) - stored_at[plan.orders[external_id]]) * 1000
        for external_id, created in firsts
        if plan.orders.get(external_id) in stored_at
    ]
    return count, lags


# --- the run ---------------------------------------------------------------------------------------


def wait_for_workers(rig: Rig, store: Store, since: float) -> float:
    """Seconds from ``since`` until the workers have nothing left (twice in a row, a poll apart)."""
    idle_polls = 0
    last_report = time.monotonic()
    while True:
        rig.check_running()
        left = store.work_left()
        idle_polls = idle_polls + 1 if not any(left.values()) else 0
        now = time.monotonic()
        if idle_polls >= 2:
            return now - since
        if now - since > SETTLE_TIMEOUT_SECONDS:
            raise BenchError(f"the workers are not done {SETTLE_TIMEOUT_SECONDS} s after the load: {left}")
        if now - last_report > 10:
            log(f"waiting for the workers: {', '.join(f'{n} {what}' for what, n in left.items())}")
            last_report = now
        time.sleep(POLL_SECONDS)


def check(plan: Plan, stored: Stored, answers: list[Answer]) -> list[str]:
    """What is wrong with the run: failed deliveries, events or orders stored twice or not at all, refunds
    not applied, events the worker refused."""
    failures = []
    answered = {answer.event_id for answer in answers if answer.status == 200}
    if len(answered) != plan.distinct_events:
        lost = plan.distinct_events - len(answered)
        failures.append(f"{lost} events never answered 200 in {DELIVERY_ATTEMPTS} attempts")
    refused = Counter(f"{a.status}: {a.error}" for a in answers if a.status is not None and a.status != 200)
    if refused:
        failures.append(f"deliveries refused: {dict(refused.most_common(3))}")
    if stored.distinct_events != plan.distinct_events:
        failures.append(f"stripe_events holds {stored.distinct_events} events, {plan.distinct_events} were sent")
    # A delivery whose answer was lost may have stored its event: its retry is then answered as a duplicate.
    stored_twice = [event for event, n in Counter(a.event_id for a in answers if a.stored).items() if n > 1]
    if stored_twice:
        failures.append(f"{len(stored_twice)} events answered 'stored' twice, such as {stored_twice[:3]}")
    if stored.duplicates:
        failures.append(f"{stored.duplicates} events or orders stored more than once")
    if stored.distinct_orders != len(plan.orders) or stored.unexpected_purchases:
        failures.append(
            f"{stored.distinct_orders} purchases for {len(plan.orders)} orders"
            f" ({len(stored.unexpected_purchases)} unexpected)"
        )
    if stored.refunds_wrong or stored.refunds_waiting:
        failures.append(
            f"{len(stored.refunds_wrong)} purchases with the wrong refunded amount (such as "
            f"{stored.refunds_wrong[:3]}), {stored.refunds_waiting} refunds still waiting for their purchase"
        )
    if stored.refused:
        failures.append(f"{len(stored.refused)} events refused by the worker, such as {stored.refused[:3]}")
    return failures


def run(rig: Rig, args: argparse.Namespace) -> int:
    env = rig.start_services()
    shop = create_shop(Mix.of(args.events).referred_buyers)
    run_id = secrets.token_hex(3)
    plan = plan_deliveries(args.events, shop.referred_tokens, run_id)
    counts = Counter(event["type"] for event in plan.deliveries)
    log(
        f"{len(plan.deliveries)} deliveries of {plan.distinct_events} events ({dict(counts)}): "
        f"{len(plan.orders)} orders, {plan.referred_orders} of them by referred buyers, {len(plan.refunded)} refunds"
    )
    api_url = rig.start_api(env, "--workers", str(args.api_workers))
    rig.start("worker", trailmark_command("worker", "--concurrency", str(args.worker_concurrency)), env)
    rig.start("beat", trailmark_command("beat"), env)
    store = Store(rig.owner_url, rig.services.redis_url, shop.tenant_id)
    try:
        url = f"{api_url}/hooks/stripe/{shop.endpoint_token}"
        log(f"posting {len(plan.deliveries)} deliveries over {args.connections} connections")
        started, api_cpu_before = time.monotonic(), rig.cpu_seconds("api")
        answers = asyncio.run(post_deliveries(url, shop.secret, plan.deliveries, args.connections))
        load_s = time.monotonic() - started
        # Per delivery, a figure that neighbours on the machine barely move, unlike rps and latency.
        api_cpu_us = (rig.cpu_seconds("api") - api_cpu_before) / max(len(answers), 1) * 1e6
        rig.check_running()
        log(f"load over after {load_s:.1f} s; waiting for the workers to finish")
        settle_s = wait_for_workers(rig, store, time.monotonic())
        log(f"workers done {settle_s:.1f} s after the last answer")
        stored = read_stored(store, plan)
        commissions = commission_lags(store, plan, answers)
    finally:
        store.close()

    ok = [answer for answer in answers if answer.status == 200]
    failed = [answer for answer in answers if answer.status != 200]
    if failed:
        rig.keep_workdir = True
        reasons = Counter(f"{a.status or a.error}" for a in failed)
        retried = len({a.event_id for a in failed})
        log(f"{len(failed)} attempts failed ({dict(reasons.most_common(5))}); {retried} deliveries sent again")
    first_start = min((a.answered_at - a.latency_ms / 1000 for a in answers), default=0.0)
    last_answer = max((a.answered_at for a in answers), default=0.0)
    rps = len(ok) / (last_answer - first_start) if last_answer > first_start else 0.0
    latencies = [answer.latency_ms for answer in answers]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)

    failures = check(plan, stored, answers)

    if commissions is None:
        commission_count, lag_p95 = 0, math.nan
        log("no commissions table in this schema (it is not built yet): commissions=0, lag_p95_ms=nan")
    else:
        commission_count, lags = commissions
        lag_p95 = percentile(lags, 0.95) if lags else math.nan
        log(
            f"{commission_count} commission rows on {len(lags)} purchases "
            f"({plan.referred_orders} orders by referred buyers)"
            + (f"; lag p50 {percentile(lags, 0.5):.0f} ms, max {max(lags):.0f} ms" if lags else "")
        )
        if not lags:
            log("no commission was created: the lag is not measured")

    log(f"outcomes: {dict(stored.outcomes)}; latency p50 {p50:.1f} ms, max {max(latencies, default=0):.1f} ms")
    if p99 > P99_TARGET_MS:
        log(f"p99 {p99:.1f} ms misses its target of {P99_TARGET_MS} ms")
    if stored.duplicates or stored.distinct_events != plan.distinct_events:
        log("every event stored exactly once: target missed")
    if not lag_p95 <= LAG_P95_TARGET_MS:  # nan misses too
        log(f"lag p95 {lag_p95:.0f} ms misses its target of {LAG_P95_TARGET_MS} ms")
    print(
        f"events_sent={len(answers)} events_distinct={plan.distinct_events} events_stored={stored.events} "
        f"orders={len(plan.orders)} refunds={len(plan.refunded)} failed_attempts={len(failed)} p50_ms={p50:.1f} "
        f"api_cpu_us={api_cpu_us:.0f} load_s={load_s:.1f} settle_s={settle_s:.1f} connections={args.connections} "
        f"api_workers={args.api_workers}"
    )
    print(
        f"webhook_rps={rps:.0f} p99_ms={p99:.1f} purchases={stored.purchases} commissions={commission_count} "
        f"duplicates={stored.duplicates} lag_p95_ms={lag_p95:.0f}"
    )
    if failures:
        rig.keep_workdir = True
        log("FAILED: " + "; ".join(failures))
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="deliveries to post (default 20000)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument(
        "--worker-concurrency", type=int, default=2, help="Celery worker processes, every queue (default 2)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events < 100 or min(args.connections, args.api_workers, args.worker_concurrency) < 1:
        log("--events must be at least 100; --connections, --api-workers and --worker-concurrency at least 1")
        return 2
    rig = Rig()
    return run_bench(rig, lambda: run(rig, args))


if __name__ == "__main__":
    sys.exit(main())
