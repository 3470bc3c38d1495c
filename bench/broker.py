"""Broker benchmark (``make bench-broker``): the same tasks through Redis (the baseline) and through RabbitMQ.

In one run it

1. creates a fresh test database and Redis database (``tests/services.py``), migrates, and signs up one tenant;
   for RabbitMQ, a vhost of the run's own on the RabbitMQ of 127.0.0.1:5672 (``rabbitmqctl``; removed after);
2. for each broker in turn, Redis first: starts one worker (``trailmark worker``, all queues, concurrency 2) on
   it and waits until it consumes, then publishes ``--tasks`` outbox messages of ``trailmark.system.ping`` one
   after the other with the outbox's own publisher (``workers.app.outbox_publisher``: on RabbitMQ each publish
   waits for its confirm), and times until every task's result is in Redis. Ping runs in the tenant's scope
   (one short transaction) and stores its result, the same work on either broker.

Measured, per broker: ``publish_per_s`` (messages handed over, one at a time, per second of publishing) and
``tasks_per_s`` (tasks over the time from the first publish to the last result).

The last line of stdout::

    redis_publish_per_s=… rabbitmq_publish_per_s=… redis_tasks_per_s=… rabbitmq_tasks_per_s=… ratio=… tasks=…

``ratio`` is ``rabbitmq_tasks_per_s / redis_tasks_per_s``. The exit status is non-zero when a task's result is
missing after ``SETTLE_SECONDS``, or when no RabbitMQ answers.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import BenchError, Rig, log, run_bench, trailmark_command

SETTLE_SECONDS = 120


def measure(
    rig: Rig, env: dict[str, str], *, name: str, broker_url: str, tenant_id: uuid.UUID, tasks: int
) -> tuple[float, float]:
    """(publish_per_s, tasks_per_s) of ``tasks`` pings through ``broker_url``."""
    import redis

    from tenants.models import OutboxMessage
    from workers.app import outbox_publisher

    results = redis.Redis.from_url(env["TRAILMARK_REDIS_URL"])
    rig.start(
        f"worker-{name}", trailmark_command("worker", "--concurrency", "2"), {**env, "TRAILMARK_BROKER_URL": broker_url}
    )
    publish = outbox_publisher(broker_url)
    warm_up = OutboxMessage(
        id=uuid.uuid4(), tenant_id=tenant_id, task="trailmark.system.ping", args=["warm-up"], queue="default"
    )
    publish(warm_up)  # the clock starts once the worker ran it: its start-up is not measured
    rig.wait_until_answers(f"worker-{name}", lambda: bool(results.exists(f"celery-task-meta-{warm_up.id}")))
    messages = [
        OutboxMessage(
            id=uuid.uuid4(), tenant_id=tenant_id, task="trailmark.system.ping", args=[str(n)], queue="default"
        )
        for n in range(tasks)
    ]
    keys = [f"celery-task-meta-{message.id}" for message in messages]
    started = time.perf_counter()
    for message in messages:
        publish(message)
    published = time.perf_counter()
    deadline = published + SETTLE_SECONDS
    while int(results.exists(*keys)) < tasks:
        rig.check_running()
        if time.perf_counter() > deadline:
            raise BenchError(f"{name}: {tasks - int(results.exists(*keys))} results missing after {SETTLE_SECONDS} s")
        time.sleep(0.05)
    done = time.perf_counter()
    rig.stop(f"worker-{name}")
    results.close()
    publish_per_s, tasks_per_s = tasks / (published - started), tasks / (done - started)
    log(f"{name}: published {tasks} in {published - started:.2f} s, all ran in {done - started:.2f} s")
    return publish_per_s, tasks_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per broker (default 3000)")
    args = parser.parse_args(argv)
    rig = Rig()

    def body() -> int:
        from tests.support.rabbitmq import Vhost, missing_reason

        reason = missing_reason()
        if reason:
            raise BenchError(reason)
        env = rig.start_services()
        from tenants.accounts.service import signup

        tenant_id = signup(
            name="Broker", owner_email="owner@broker.example", password="correct horse battery"
        ).tenant.id
        vhost = Vhost.create()
        try:
            redis_publish, redis_tasks = measure(
                rig, env, name="redis", broker_url=env["TRAILMARK_REDIS_URL"], tenant_id=tenant_id, tasks=args.tasks
            )
            rabbit_publish, rabbit_tasks = measure(
                rig, env, name="rabbitmq", broker_url=vhost.url(), tenant_id=tenant_id, tasks=args.tasks
            )
        finally:
            vhost.delete()
        print(
            f"redis_publish_per_s={redis_publish:.0f} rabbitmq_publish_per_s={rabbit_publish:.0f} "
            f"redis_tasks_per_s={redis_tasks:.0f} rabbitmq_tasks_per_s={rabbit_tasks:.0f} "
            f"ratio={rabbit_tasks / redis_tasks:.2f} tasks={args.tasks}"
        )
        return 0

    return run_bench(rig, body)


if __name__ == "__main__":
    sys.exit(main())
