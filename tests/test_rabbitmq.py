"""Celery on RabbitMQ (``TRAILMARK_BROKER_URL=amqp://…``): real workers on the RabbitMQ of 127.0.0.1:5672, in a
virtual host of this run's own. What a deployment on RabbitMQ relies on: a task whose worker dies runs again and
completes once; a message that kills every worker is set aside instead of looping; a delay waits in the broker;
the outbox survives the broker going away; the identity flow works unchanged."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil
import psycopg
import pytest
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import text

from tenants.embedded import free_port
from tenants.isolation import tenant_session
from tenants.metrics.operations import OperationsCollector
from tenants.outbox import service as outbox
from tenants.settings import Settings, SettingsError
from tests.conftest import REPO, TenantHandle, child_env, stop, wait_until
from tests.services import APP_ROLE
from tests.support.broker_tasks import CRASH_TASK, RECORD_TASK, RUNS_SCHEMA
from tests.support.rabbitmq import (
    Vhost,
    declared,
    get_dead_letter,
    missing_reason,
    queue_state,
    start_broker_worker,
)
from tests.support.tcp_proxy import TcpProxy
from workers.app import (
    DEAD_LETTER_QUEUE,
    DELIVERY_LIMIT,
    MAX_TASK_DELAY_SECONDS,
    QUEUES,
    TASK_TIME_LIMIT,
    configure,
    install_outbox_publisher,
    outbox_publisher,
    queue_lengths,
)

# --- configuration, no server needed ---------------------------------------------------------------------------


def test_an_amqp_broker_gets_quorum_queues_with_a_delivery_limit_and_dead_letters() -> None:
    app = Celery("configured", set_as_current=False)
    configure(app, "amqp://guest:guest@rabbitmq:5672/trailmark", result_url="redis://cache:6379/0")
    queues = {queue.name: queue for queue in app.conf.task_queues}
    assert set(queues) == set(QUEUES)
    for queue in queues.values():
        assert queue.durable
        assert queue.queue_arguments["x-queue-type"] == "quorum"
        assert queue.queue_arguments["x-delivery-limit"] == DELIVERY_LIMIT
        assert queue.queue_arguments["x-dead-letter-exchange"] == DEAD_LETTER_QUEUE
        assert queue.exchange.type == "topic"  # native delayed delivery cannot route through direct exchanges
    assert (app.conf.task_acks_late, app.conf.worker_prefetch_multiplier) == (True, 1)
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.result_backend == "redis://cache:6379/0"  # results stay on Redis
    assert TASK_TIME_LIMIT < 1800  # RabbitMQ's default consumer_timeout: 30 minutes

    redis = Celery("embedded", set_as_current=False)
    configure(redis, "redis://cache:6379/0")
    assert {queue.exchange.type for queue in redis.conf.task_queues} == {"direct"}
    assert all(not queue.queue_arguments for queue in redis.conf.task_queues)
    assert redis.conf.result_backend == "redis://cache:6379/0"


SETTINGS = {
    "TRAILMARK_DATABASE_URL": "postgresql://app@db/trailmark",
    "TRAILMARK_REDIS_URL": "redis://cache:6379/0",
    "TRAILMARK_SIGNING_KEYS": "k1:" + "A" * 43,
    "TRAILMARK_SECRET_KEYS": "s1:" + "C" * 43,
}


def test_the_broker_is_redis_unless_a_broker_url_is_set() -> None:
    assert Settings.from_env(SETTINGS).task_broker_url == "redis://cache:6379/0"
    rabbit = Settings.from_env({**SETTINGS, "TRAILMARK_BROKER_URL": "amqp://u:p@rabbitmq:5672/trailmark"})
    assert rabbit.task_broker_url == "amqp://u:p@rabbitmq:5672/trailmark"
    assert rabbit.redis_url == "redis://cache:6379/0"
    with pytest.raises(SettingsError, match="TRAILMARK_BROKER_URL must be an amqp://") as refused:
        Settings.from_env({**SETTINGS, "TRAILMARK_BROKER_URL": "kafka://u:secret@broker"})
    assert "secret" not in str(refused.value)
    with pytest.raises(SettingsError, match="TRAILMARK_BROKER_URL needs TRAILMARK_REDIS_URL"):
        Settings.from_env({"TRAILMARK_BROKER_URL": "amqp://rabbitmq"})


def test_a_delay_longer_than_the_brokers_timeouts_is_refused() -> None:
    from workers.system import ping

    with pytest.raises(ValueError, match=f"exceeds {MAX_TASK_DELAY_SECONDS} s"):
        ping.apply_async((str(uuid.uuid4()),), countdown=MAX_TASK_DELAY_SECONDS + 60)


# --- on the RabbitMQ of this machine ----------------------------------------------------------------------------


@dataclass
class Broker:
    vhost: Vhost
    url: str
    app: Celery
    """Publishes to the vhost; results (ping's) come back through the session's Redis."""

    def consuming(self, consumers: int = 1, queue: str = "default") -> None:
        """Wait until the workers consume ``queue`` and have set up the delay exchanges."""
        wait_until(
            lambda: (
                queue_state(self.url, queue)[1] >= consumers and declared(self.url, exchange="celery_delayed_delivery")
            ),
            60,
            f"{consumers} worker(s) consuming {queue}",
            interval=0.2,
        )


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    vhost = Vhost.create()
    url = vhost.url()
    app = Celery("rabbitmq-test", set_as_current=False)
    configure(app, url, result_url=os.environ["TRAILMARK_REDIS_URL"])
    try:
        yield Broker(vhost, url, app)
    finally:
        vhost.delete()


@pytest.fixture(scope="module")
def runs(owner_url: str) -> Iterator[Callable[[str], list[tuple[bool, int, datetime]]]]:
    """The committed runs of the test tasks with a marker: (redelivered, pid, when), oldest first."""
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {RUNS_SCHEMA}")
        connection.execute(
            f"CREATE TABLE {RUNS_SCHEMA}.task_runs (marker text NOT NULL, task_id text NOT NULL, "
            "redelivered boolean NOT NULL, pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        connection.execute(f"GRANT USAGE ON SCHEMA {RUNS_SCHEMA} TO {APP_ROLE}")
        connection.execute(f"GRANT SELECT, INSERT ON {RUNS_SCHEMA}.task_runs TO {APP_ROLE}")

        def committed(marker: str) -> list[tuple[bool, int, datetime]]:
            return [
                (bool(r[0]), int(r[1]), r[2])
                for r in connection.execute(
                    f"SELECT redelivered, pid, at FROM {RUNS_SCHEMA}.task_runs WHERE marker = %s ORDER BY at",
                    (marker,),
                )
            ]

        yield committed
        connection.execute(f"DROP SCHEMA {RUNS_SCHEMA} CASCADE")


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            stop(process)


def _tree(process: subprocess.Popen[bytes]) -> set[int]:
    try:
        parent = psutil.Process(process.pid)
        return {parent.pid, *(child.pid for child in parent.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _waiting_on(owner: psycopg.Connection[Any], lock: int, among: set[int]) -> int | None:
    """Which of the processes ``among`` has a database connection waiting for the test's advisory lock (a killed
    process's connection may wait on too: PostgreSQL notices the client is gone only when it next answers it)."""
    rows = owner.execute(
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objid = %s",
        (lock,),
    ).fetchall()
    ports = {row[0] for row in rows}
    for pid in among:
        try:
            if any(c.laddr.port in ports for c in psutil.Process(pid).net_connections(kind="tcp")):
                return pid
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return None


@pytest.mark.slow
def test_a_task_whose_worker_is_killed_midway_completes_once_on_another(
    broker: Broker, runs: Callable[[str], list[tuple[bool, int, datetime]]], owner_url: str, workers: list[Any]
) -> None:
    marker, lock = uuid.uuid4().hex, 7_100_000 + os.getpid() % 100_000
    workers += [start_broker_worker(broker.url), start_broker_worker(broker.url)]
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute("SELECT pg_advisory_lock(%s)", (lock,))
        broker.consuming(2)
        broker.app.send_task(RECORD_TASK, args=[marker, lock], queue="default")
        everyone = set().union(*(_tree(w) for w in workers))
        first = wait_until(lambda: _waiting_on(owner, lock, everyone), 30, "a worker to start the task")
        [victim] = [w for w in workers if first in _tree(w)]
        [survivor] = [w for w in workers if w is not victim]
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool process, mid-transaction
        victim.wait(10)
        # Acknowledged late: the message went back to the queue when the victim's connection closed.
        second = wait_until(
            lambda: _waiting_on(owner, lock, _tree(survivor)), 30, "the task redelivered to the other worker"
        )
        owner.execute("SELECT pg_advisory_unlock(%s)", (lock,))
    [(redelivered, pid, _)] = wait_until(lambda: runs(marker), 30, "the task to complete")
    assert redelivered and pid == second  # the killed run left nothing: its transaction never committed
    stop(survivor)  # a warm shutdown: an unacknowledged message would go back to the queue now
    assert queue_state(broker.url, "default")[0] == 0
    assert len(runs(marker)) == 1


@pytest.mark.slow
def test_a_task_that_kills_every_worker_ends_in_the_dead_letter_queue(
    broker: Broker, runs: Callable[[str], list[tuple[bool, int, datetime]]], workers: list[Any]
) -> None:
    marker = uuid.uuid4().hex
    workers.append(start_broker_worker(broker.url))
    broker.consuming()
    broker.app.send_task(CRASH_TASK, args=[marker], queue="default")
    # What /metrics reports as trailmark_task_dead_letters.
    wait_until(lambda: queue_lengths(broker.url, 5)[1] == 1, 90, "the poison message dead-lettered", interval=0.5)
    attempts = runs(marker)
    assert len(attempts) == DELIVERY_LIMIT + 1  # the first delivery and DELIVERY_LIMIT redeliveries, no more
    assert [redelivered for redelivered, _, _ in attempts] == [False] + [True] * DELIVERY_LIMIT
    letter = get_dead_letter(broker.url, DEAD_LETTER_QUEUE)
    assert letter.headers["task"] == CRASH_TASK
    assert letter.headers["x-first-death-reason"] == "delivery_limit"
    assert letter.headers["x-first-death-queue"] == "default"
    assert workers[0].poll() is None  # the worker replaced its pool process each time and serves on
    broker.app.send_task(RECORD_TASK, args=[marker + "-after"], queue="default")
    wait_until(lambda: runs(marker + "-after"), 30, "the next task to run")
    assert len(runs(marker)) == DELIVERY_LIMIT + 1


@pytest.mark.slow
def test_a_delayed_task_waits_in_the_broker_and_runs_after_its_delay(
    broker: Broker, runs: Callable[[str], list[tuple[bool, int, datetime]]], owner_url: str, workers: list[Any]
) -> None:
    marker, delay = uuid.uuid4().hex, 4
    workers.append(start_broker_worker(broker.url))
    broker.consuming()
    with psycopg.connect(owner_url) as clock:
        [(sent_at,)] = clock.execute("SELECT clock_timestamp()").fetchall()
    broker.app.send_task(RECORD_TASK, args=[marker], queue="default", countdown=delay)
    # 4 s = 0b100: the message waits in the 4-second delay queue, not unacknowledged in a worker.
    wait_until(lambda: queue_state(broker.url, "celery_delayed_2")[0] == 1, 3, "the message in the delay queue")
    assert runs(marker) == [] and queue_state(broker.url, "default")[0] == 0
    [(_, _, ran_at)] = wait_until(lambda: runs(marker), 30, "the delayed task to run")
    assert (ran_at - sent_at).total_seconds() >= delay


@pytest.mark.slow
def test_the_outbox_delivers_what_it_kept_while_the_broker_was_away(
    broker: Broker, make_tenant: Callable[..., TenantHandle], owner_url: str, workers: list[Any]
) -> None:
    """The app reaches RabbitMQ through a link the test cuts (open connections reset, new ones refused), as a
    broker that crashed looks to it; workers are connected directly."""
    proxy = TcpProxy(("127.0.0.1", 5672))
    publish = outbox_publisher(broker.vhost.url(proxy.address))
    outbox.set_publisher(publish)
    tenant = make_tenant("Rabbit")
    workers.append(start_broker_worker(broker.url))
    broker.consuming()
    # The session's own pipeline (beat on Redis), when running, sweeps every tenant's outbox: held off here, so
    # this message reaches RabbitMQ or nothing.
    sweeps = psycopg.connect(owner_url, autocommit=True)
    sweeps.execute("SELECT pg_advisory_lock(%s)", (outbox.SWEEP_LOCK,))

    def pending() -> list[tuple[int, str | None]]:
        with tenant_session(tenant.tenant_id) as session:
            return [(r[0], r[1]) for r in session.execute(text("SELECT attempts, last_error FROM outbox"))]

    def ping_result(message_id: uuid.UUID) -> object:
        return AsyncResult(str(message_id), app=broker.app).get(timeout=60)

    try:
        with tenant_session(tenant.tenant_id) as session:
            before = outbox.enqueue(session, "trailmark.system.ping", "before")
        assert ping_result(before.id) == {"tenant": tenant.slug, "note": "before"}

        proxy.down()
        with tenant_session(tenant.tenant_id) as session:
            during = outbox.enqueue(session, "trailmark.system.ping", "during")
        [(attempts, error)] = wait_until(lambda: [p for p in pending() if p[0]], 30, "the relay to record the outage")
        assert attempts == 1 and error

        proxy.up()
        assert outbox.relay_tenant(tenant.tenant_id, publish) == 1  # the sweep's relay, once the broker is back
        assert ping_result(during.id) == {"tenant": tenant.slug, "note": "during"}
        assert pending() == []
    finally:
        sweeps.close()
        install_outbox_publisher()
        proxy.down()


IDENTITY_STORIES = [
    "test_form_submission_creates_the_contact_with_its_anonymous_history",
    "test_an_email_click_identifies_the_device_and_merges_its_history",
    "test_a_forwarded_link_repoints_the_device_but_never_merges_people",
]


@dataclass
class IdentityRun:
    vhost: Vhost
    process: subprocess.Popen[str]


@pytest.fixture(scope="module", autouse=True)
def identity_run(request: pytest.FixtureRequest) -> Iterator[IdentityRun | None]:
    """Started with the module, so that its own database, migrations, worker and beat come up while the tests above
    run (most of their time is waiting); ``test_the_identity_flow_passes_on_rabbitmq`` collects its outcome."""
    wanted = any(item.name == "test_the_identity_flow_passes_on_rabbitmq" for item in request.session.items)
    if not wanted or missing_reason():
        yield None
        return
    vhost = Vhost.create()
    env = child_env(TRAILMARK_BROKER_URL=vhost.url())
    env.pop("TRAILMARK_TEST_REDIS_URL", None)  # that child would flush this session's Redis database
    stories = " or ".join(IDENTITY_STORIES)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "tests/test_identity.py", "-q", "-p", "no:cacheprovider", "-k", stories],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield IdentityRun(vhost, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        vhost.delete()


@pytest.mark.slow
def test_the_identity_flow_passes_on_rabbitmq(identity_run: IdentityRun | None) -> None:
    """tests/test_identity.py's stories that go through tasks (merging a history on a form and on an email click,
    re-pointing a device), run as they are with the broker switched: its pipeline fixture's worker and beat, and
    the app's outbox, all on a vhost of their own."""
    reason = missing_reason()
    if reason or identity_run is None:
        pytest.skip(reason or "not started")
    output, _ = identity_run.process.communicate(timeout=240)
    assert identity_run.process.returncode == 0, output[-6000:]
    assert f"{len(IDENTITY_STORIES)} passed" in output, output[-6000:]
    # Its worker consumed from RabbitMQ: the queues were declared in this vhost.
    url = identity_run.vhost.url()
    assert declared(url, queue="identity") and declared(url, queue="ingest")


def test_metrics_read_the_queues_and_dead_letters_from_rabbitmq(broker: Broker, owner_url: str) -> None:
    """What ``/metrics`` reports on RabbitMQ: tasks waiting per queue and the dead letters, by passive declares, and
    the broker as a component that can be down."""
    for _ in range(3):  # no worker runs now: they wait
        broker.app.send_task(RECORD_TASK, args=[uuid.uuid4().hex], queue="conversions")

    def gauges(url: str) -> dict[tuple[str, tuple[str, ...]], float]:
        collector = OperationsCollector(
            os.environ["TRAILMARK_REDIS_URL"],
            owner_url,
            queues=QUEUES,
            max_backlog=1000,
            broker_queues=functools.partial(queue_lengths, url),
        )
        return {
            (sample.name, tuple(sample.labels.values())): sample.value
            for family in collector.collect()
            for sample in family.samples
        }

    read = gauges(broker.url)
    assert read[("trailmark_up", ("broker",))] == 1
    assert read[("trailmark_queue_waiting_tasks", ("conversions",))] == 3
    assert read[("trailmark_queue_waiting_tasks", ("identity",))] == 0
    assert read[("trailmark_task_dead_letters", ())] == queue_state(broker.url, DEAD_LETTER_QUEUE)[0]
    away = gauges(broker.vhost.url(f"127.0.0.1:{free_port()}"))  # nothing listens there
    assert away[("trailmark_up", ("broker",))] == 0
    assert ("trailmark_task_dead_letters", ()) not in away
    assert away[("trailmark_up", ("redis",))] == 1  # the rest of the scrape is unaffected
