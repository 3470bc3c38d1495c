"""Stripe events under faults: a worker killed in the middle of a drain loses and repeats nothing, each purchase
is stored with its commission or not at all, and an event that always fails is set aside with its reason
instead of holding back the shop's other events."""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.purchases.stripe_webhooks import MAX_ATTEMPTS, recent_events
from tests.conftest import LiveServer, TenantHandle, start_api_server, start_beat, start_worker, stop, wait_until
from tests.support import stripe as fake_stripe
from tests.support.commissions import earning_program

SECRET = "whsec_" + "f4ult" * 6
EVENTS = 250
KILL_AFTER = 40
"""Processed events before the worker is killed: well before the last one is."""


def connect(client: Any, tenant: TenantHandle) -> str:
    answer = client.put("/api/v1/integrations/stripe", json={"signing_secret": SECRET}, headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    return "/hooks/" + answer.json()["webhook_url"].split("/hooks/", 1)[1]


def sale(order: str, amount: int = 5000) -> dict[str, Any]:
    """A paid checkout of the program's product with the partner's promo code: it earns 30 % for pat."""
    return fake_stripe.checkout_completed(
        session_id=f"cs_{order}", payment_intent=f"pi_{order}", amount_total=amount,
        email=f"{order}@buyers.example", metadata={"trailmark_product": "course", "trailmark_promo_code": "pat-promo"},
    )  # fmt: skip


def deliver(http: httpx.Client, hook: str, event: dict[str, Any]) -> int:
    body, headers = fake_stripe.signed_delivery(event, SECRET)
    return http.post(hook, content=body, headers=headers).status_code


def scalar(tenant: TenantHandle, query: str, **params: Any) -> Any:
    with tenant_session(tenant.tenant_id) as session:
        return session.execute(text(query), params).scalar()


PROCESSED = "SELECT count(*) FROM stripe_events WHERE processed_at IS NOT NULL"
SETTLED = "SELECT count(*) FROM stripe_events WHERE id = ANY(:ids) AND processed_at IS NOT NULL"
WITHOUT_COMMISSION = """SELECT count(*) FROM purchases p
    WHERE NOT EXISTS (SELECT 1 FROM commissions c WHERE c.purchase_id = p.id)"""


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """``kill -9`` of the worker and its pool processes at once: no warm shutdown, nothing acknowledged."""
    for each in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        each.send_signal(signal.SIGKILL)
    process.wait(10)


@pytest.mark.slow
def test_a_worker_killed_mid_drain_stores_every_event_and_commission_exactly_once(
    client: Any,
    make_tenant: Callable[..., TenantHandle],
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    """Deliveries arrive while the worker drains them; it is killed with a batch in flight. Whatever
    was committed holds each purchase together with its commission; after a restart every event is stored
    once, every order is one purchase, and each purchase earns its commission once."""
    redis_url, _, _ = private_redis
    tenant = make_tenant("Stripekill")
    program = earning_program(tenant, "pat")
    hook = connect(client, tenant)
    events = [sale(f"kill{n}_{uuid.uuid4().hex[:6]}", 1000 + n % 7 * 1000) for n in range(EVENTS)]
    resent = events[::20]  # Stripe's retries: the same bodies again, signed anew
    env = {"TRAILMARK_REDIS_URL": redis_url}
    api = start_api_server(**env)
    worker, beat = start_worker(**env), start_beat(**env)
    answers: list[int] = []
    try:
        with httpx.Client(base_url=api.base_url, timeout=30) as http, ThreadPoolExecutor(8) as pool:
            sending = threading.Thread(
                target=lambda: answers.extend(pool.map(lambda e: deliver(http, hook, e), events + resent))
            )
            sending.start()
            wait_until(lambda: scalar(tenant, PROCESSED) >= KILL_AFTER, 120, f"{KILL_AFTER} events processed")
            kill_tree(worker)
            processed_at_kill = scalar(tenant, PROCESSED)
            assert scalar(tenant, WITHOUT_COMMISSION) == 0  # committed together, or not at all
            worker = start_worker(**env)
            sending.join(300)
            assert answers == [200] * len(events + resent)
            assert processed_at_kill < len(events)  # killed while there was work left
            wait_until(lambda: scalar(tenant, PROCESSED) == len(events), 180, "every event processed")
    finally:
        stop(beat)
        stop(worker)
        api.stop()
    with tenant_session(tenant.tenant_id) as session:
        outcomes = session.execute(text("SELECT split_part(outcome, ':', 1), count(*) FROM stripe_events GROUP BY 1"))
        assert dict(outcomes.all()) == {"recorded": len(events)}
        assert session.execute(text("SELECT count(*) FROM purchases")).scalar() == len(events)
        rows = session.execute(
            text("""SELECT p.amount, c.amount, c.partner_id, c.level FROM purchases p
                    JOIN commissions c ON c.purchase_id = p.id""")
        ).all()
    assert len(rows) == len(events)  # one each: none missing, none twice
    assert {(partner, level) for _, _, partner, level in rows} == {(program.partners["pat"].id, 1)}
    assert all(earned == (paid * 3000 + 5000) // 10000 for paid, earned, _, _ in rows)  # 30 %, each once


@pytest.fixture
def poisoned_order(owner_url: str) -> Iterator[str]:
    """An order id whose purchase the database always refuses to store (a trigger raises): an event that fails
    however often it is tried, as a bug or a broken row would make it."""
    order = f"cs_poison_{uuid.uuid4().hex[:8]}"
    name = f"test_poison_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.external_id = '{order}' THEN RAISE EXCEPTION 'this purchase cannot be stored'; END IF;
                    RETURN NEW;
                END $$"""
        )
        connection.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON purchases FOR EACH ROW EXECUTE FUNCTION {name}()")
    yield order
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(f"DROP TRIGGER {name} ON purchases")
        connection.execute(f"DROP FUNCTION {name}()")


@pytest.mark.usefixtures("pipeline")
def test_an_event_that_always_fails_is_set_aside_with_its_reason_and_holds_back_no_other(
    client: Any, api_server: LiveServer, make_tenant: Callable[..., TenantHandle], poisoned_order: str
) -> None:
    """The poison event comes first; the shop's later events are processed meanwhile, and after a bounded
    number of attempts the poison event is marked failed with the database's reason, which the tenant's
    Stripe page shows. It is no longer pending: no drain tries it again."""
    tenant = make_tenant("Stripepoison")
    earning_program(tenant, "pat")
    hook = connect(client, tenant)
    poison = sale(poisoned_order.removeprefix("cs_"))
    good = [sale(f"good{n}_{uuid.uuid4().hex[:6]}") for n in range(3)]
    with httpx.Client(base_url=api_server.base_url, timeout=30) as http:
        assert [deliver(http, hook, event) for event in [poison, *good]] == [200] * 4
        ids = [event["id"] for event in good]
        wait_until(
            lambda: scalar(tenant, SETTLED, ids=ids) == 3,
            60, "the good events processed",
        )  # fmt: skip
        assert scalar(tenant, WITHOUT_COMMISSION) == 0 and scalar(tenant, "SELECT count(*) FROM purchases") == 3

        def set_aside() -> Any:
            with tenant_session(tenant.tenant_id) as session:
                return session.execute(
                    text(
                        """SELECT outcome, attempts, last_error FROM stripe_events
                           WHERE id = :id AND processed_at IS NOT NULL"""
                    ),
                    {"id": poison["id"]},
                ).first()

        outcome, attempts, last_error = wait_until(set_aside, 90, "the poison event set aside")
        assert attempts == MAX_ATTEMPTS
        assert outcome.startswith(f"failed: {MAX_ATTEMPTS} attempts raised") and "cannot be stored" in outcome
        assert "cannot be stored" in last_error and "INSERT" not in last_error  # the reason, not the SQL
        # A later event of the shop goes through as usual; the set-aside one stays as it is.
        later = sale(f"later_{uuid.uuid4().hex[:6]}")
        assert deliver(http, hook, later) == 200
        wait_until(
            lambda: scalar(tenant, "SELECT outcome FROM stripe_events WHERE id = :id AND processed_at IS NOT NULL",
                           id=later["id"]),
            60, "the later event processed",
        )  # fmt: skip
    assert set_aside() == (outcome, attempts, last_error)
    assert scalar(tenant, "SELECT count(*) FROM purchases WHERE external_id = :o", o=poisoned_order) == 0
    with tenant_session(tenant.tenant_id) as session:  # what the dashboard's Stripe page lists
        shown = {event.id: event.outcome for event in recent_events(session)}
    assert shown[poison["id"]] == outcome
