"""The Celery app. Settings come from the environment; database engines are created lazily in each
worker process after the fork (see ``tenants.isolation``)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task, bootsteps
from celery.exceptions import SecurityWarning
from celery.schedules import crontab
from celery.signals import before_task_publish, setup_logging, worker_process_init
from kombu import Connection, Exchange, Queue

from tenants.heap import freeze_startup_heap
from tenants.isolation import dispose_engine
from tenants.logs import configure_logging
from tenants.models import OutboxMessage
from tenants.outbox import service as outbox
from tenants.settings import get_settings
from workers import metrics as _task_metrics  # noqa: F401 - its signal receivers count every task

__all__ = [
    "DEAD_LETTER_QUEUE",
    "DELIVERY_LIMIT",
    "MAX_TASK_DELAY_SECONDS",
    "QUEUES",
    "celery_app",
    "configure",
    "install_outbox_publisher",
    "is_rabbitmq",
    "outbox_publisher",
    "publish_outbox_message",
    "queue_lengths",
]

QUEUES = ("ingest", "identity", "conversions", "default")
TASK_ROUTES = {
    "trailmark.ingest.drain": {"queue": "ingest"},
    "trailmark.identity.*": {"queue": "identity"},
    "trailmark.conversions.*": {"queue": "conversions"},
}
"""Tasks not named here go to ``default``."""

TASK_TIME_LIMIT = 600
"""Seconds a task may run before its pool process is killed (540 s soft). Below RabbitMQ's ``consumer_timeout``
(30 min by default), so a delivery is acknowledged or returned long before RabbitMQ gives up on its consumer."""
RABBITMQ_CONSUMER_TIMEOUT = 1800
MAX_TASK_DELAY_SECONDS = 900
"""The longest countdown or ETA a task may be sent with (retries back off 300 s at most). On RabbitMQ a delay
waits in the broker (native delayed delivery); on Redis the worker holds the message unacknowledged until it is
due, so a delay plus a run must stay within the broker's timeout or the message would be handed out twice."""
assert MAX_TASK_DELAY_SECONDS + TASK_TIME_LIMIT < RABBITMQ_CONSUMER_TIMEOUT

# --- RabbitMQ (TRAILMARK_BROKER_URL=amqp://…): quorum queues, docs/scale.md "Celery on RabbitMQ" ---
DELIVERY_LIMIT = 5
"""Times a message may come back unacknowledged (its worker died, or was killed, while running it) and still be
handed out again; the next time, RabbitMQ dead-letters it: a message that kills every worker is a poison message."""
DEAD_LETTER_QUEUE = "dead_letters"
"""Where RabbitMQ moves a task past its delivery limit, or one a worker refused (an unknown task name), for an
operator to read; nothing consumes it."""
_DEAD_LETTERS = Queue(
    DEAD_LETTER_QUEUE,
    Exchange(DEAD_LETTER_QUEUE, type="fanout"),
    queue_arguments={"x-queue-type": "quorum"},
)
QUORUM_QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",  # replicated, durable; Celery then uses per-consumer prefetch and native delays
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-exchange": DEAD_LETTER_QUEUE,
    # Dead-lettered with publisher confirms inside RabbitMQ, so a poison message is moved, never dropped
    # (at-least-once dead-lettering needs reject-publish overflow; the queues have no length limit).
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def is_rabbitmq(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def task_queues(broker_url: str) -> list[Queue]:
    """One exchange and routing key per queue, so a task goes to exactly the queue it names. On RabbitMQ the
    exchanges are topic exchanges: Celery's native delayed delivery routes a due task back through them (it
    cannot through direct ones), and the routing key is still the queue's one word."""
    if is_rabbitmq(broker_url):
        return [
            Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=QUORUM_QUEUE_ARGUMENTS)
            for name in QUEUES
        ]
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]


class TrailmarkTask(Task):
    """Every task's class: refuses a delay longer than :data:`MAX_TASK_DELAY_SECONDS`."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        countdown, eta = options.get("countdown"), options.get("eta")
        delay = float(countdown or 0)
        if isinstance(eta, datetime):
            due = eta if eta.tzinfo else eta.replace(tzinfo=UTC)  # Celery reads a naive ETA as UTC
            delay = max(delay, (due - datetime.now(UTC)).total_seconds())
        if delay > MAX_TASK_DELAY_SECONDS:
            raise ValueError(f"{self.name}: a delay of {delay:.0f} s exceeds {MAX_TASK_DELAY_SECONDS} s")
        return super().apply_async(args, kwargs, **options)


celery_app = Celery(
    "trailmark",
    task_cls=TrailmarkTask,
    include=[
        "workers.system",
        "workers.ingest",
        "workers.identity",
        "workers.mail",
        "workers.reports",
        "workers.purchases",
        "workers.partners",
        "workers.privacy",
        "workers.conversions",
    ],
)


def configure(app: Celery, broker_url: str, *, results: bool = True, result_url: str | None = None) -> None:
    """Apply Trailmark's broker settings to ``app``: RabbitMQ quorum queues for an amqp:// URL, Redis lists
    otherwise. Results go to ``result_url`` (Redis), else to a Redis broker. ``results=False`` for an app
    that only publishes: it must not wait on (or reconnect to) the result store when Redis is down."""
    rabbitmq = is_rabbitmq(broker_url)
    result_backend = (result_url or (None if rabbitmq else broker_url)) if results else None
    app.conf.update(
        broker_url=broker_url,
        result_backend=result_backend,
        result_expires=3600,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A task is acknowledged only after it ran; a killed worker's task goes back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=task_queues(broker_url),
        task_default_queue="default",
        task_routes=TASK_ROUTES,
        task_track_started=False,
        task_time_limit=TASK_TIME_LIMIT,
        task_soft_time_limit=TASK_TIME_LIMIT - 60,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options=(
            # Each publish waits for RabbitMQ's confirm: a message the broker refused raises instead of vanishing.
            {"confirm_publish": True}
            if rabbitmq
            else {
                # Longer than any task may run, so an unacknowledged task is redelivered only if its worker died.
                "visibility_timeout": 3600,
                "socket_connect_timeout": 3,
                "socket_timeout": 10,
            }
        ),
        # Countdowns (retries' backoff) wait in RabbitMQ's delay queues, not unacknowledged in a worker.
        broker_native_delayed_delivery_queue_type="quorum",
        redis_socket_connect_timeout=3,
        redis_socket_timeout=10,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "relay-outbox": {
                "task": "trailmark.system.relay_outbox",
                "schedule": 2.0,
                "options": {"expires": 10},
            },
            # Each drain run stores until the stream is empty; runs overlap safely (one consumer group).
            "drain-ingest": {"task": "trailmark.ingest.drain", "schedule": 1.0, "options": {"expires": 2}},
            # Stripe events whose API nudge was lost (Redis or the broker down) wait a second at most.
            "drain-stripe-events": {
                "task": "trailmark.purchases.drain_all_stripe_events",
                "schedule": 1.0,
                "options": {"expires": 2},
            },
            "visit-partitions": {"task": "trailmark.ingest.ensure_visit_partitions", "schedule": 3600.0},
            # Yesterday's rollups against a scan of its visits and contacts, once the day is complete.
            # Commissions whose hold ended become payable; a minute late at most.
            "approve-due-commissions": {
                "task": "trailmark.partners.approve_due",
                "schedule": 60.0,
                "options": {"expires": 50},
            },
            # Retention: expired anonymous visitors and old visits, in short batches (tenants.privacy.retention).
            "expire-retention": {
                "task": "trailmark.privacy.expire_retention",
                "schedule": crontab(minute=41),
                "options": {"expires": 3000},
            },
            # Queued conversions go out once a batch is full or its oldest waited a few seconds.
            "flush-conversions": {
                "task": "trailmark.conversions.flush",
                "schedule": 1.0,
                "options": {"expires": 5},
            },
            "check-rollups": {"task": "trailmark.reports.check_rollups", "schedule": crontab(hour=3, minute=17)},
        },
    )
    if rabbitmq:
        app.steps["consumer"].add(DeclareDeadLetters)


class DeclareDeadLetters(bootsteps.StartStopStep):
    """A RabbitMQ worker declares the dead-letter exchange and queue its task queues name, each time it
    (re)connects, so a poison message has somewhere to go before the first one appears."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        with c.app.connection_for_write() as connection:
            _DEAD_LETTERS.bind(connection.default_channel).declare()


@before_task_publish.connect
def _no_message_ttl_on_rabbitmq(properties: dict[str, Any], **_: Any) -> None:
    """An ``expires`` (beat's ticks have one) becomes a per-message TTL on RabbitMQ, and a message expiring in a
    queue with a dead-letter exchange is dead-lettered: every missed tick would land among the poison messages.
    Workers discard an expired task themselves (its ``expires`` header), as on Redis. A no-op on Redis."""
    properties.pop("expiration", None)


_settings = get_settings()
if _settings.task_broker_url:
    configure(celery_app, _settings.task_broker_url, result_url=_settings.redis_url)


PUBLISH_CONFIRM_SECONDS = 10
"""A broker that takes a message but never confirms it (RabbitMQ blocks publishers on a memory or disk alarm)
fails the publish after this long, leaving the outbox row for the sweep."""


def outbox_publisher(broker_url: str) -> outbox.Publisher:
    """A publisher that hands each outbox row to the broker at ``broker_url``; the row id becomes the
    task id. A broker that is down fails the call within seconds, leaving the row for the sweep."""
    app = Celery("trailmark-outbox", set_as_current=False, task_cls=TrailmarkTask)
    configure(app, broker_url, results=False)

    def publish(message: OutboxMessage) -> None:
        app.send_task(
            message.task,
            args=[str(message.tenant_id), *message.args],
            queue=message.queue,
            task_id=str(message.id),
            retry=False,  # a failure leaves the row for the sweep instead of blocking the caller
            confirm_timeout=PUBLISH_CONFIRM_SECONDS,
        )

    return publish


def publish_outbox_message(message: OutboxMessage) -> None:
    """Publish to this process's broker (``TRAILMARK_BROKER_URL``, else ``TRAILMARK_REDIS_URL``)."""
    global _publish  # noqa: PLW0603 - built once per process, on first use
    if _publish is None:
        _publish = outbox_publisher(celery_app.conf.broker_url)
    _publish(message)


_publish: outbox.Publisher | None = None


def queue_lengths(broker_url: str, timeout: float) -> tuple[dict[str, int], int]:
    """The tasks waiting in each of :data:`QUEUES` on RabbitMQ, and the dead letters, read with passive
    ``queue.declare`` calls (which create nothing: a queue no one declared yet holds none). Raises when the
    broker does not answer within ``timeout``."""
    lengths: dict[str, int] = {}
    options = {"read_timeout": timeout, "write_timeout": timeout}
    with Connection(broker_url, connect_timeout=timeout, transport_options=options) as connection:
        connection.ensure_connection(max_retries=0)  # one try: the next scrape tries again
        for queue in (*QUEUES, DEAD_LETTER_QUEUE):
            channel = connection.channel()
            try:
                lengths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors:  # not declared yet (it closed the channel): nothing was sent
                lengths[queue] = 0
            else:
                channel.close()
    return lengths, lengths.pop(DEAD_LETTER_QUEUE)


def install_outbox_publisher() -> None:
    """Let this process publish outbox messages right after their transaction commits."""
    outbox.set_publisher(publish_outbox_message)


@setup_logging.connect
def _use_trailmark_logging(**_: object) -> None:
    """Worker and beat log like the API (``tenants.logs``). A receiver of this signal also stops Celery
    from adding handlers of its own and from replacing sys.stdout/sys.stderr with a proxy to logging:
    a handler writing to that proxy loops back into it, and the proxy's recursion guard dropped every
    record logged in the pool processes. Pool processes inherit this set-up through the fork."""
    configure_logging()


# As root, Celery refuses to start with pickle among the accepted formats (SecurityError, which stays) and
# only warns otherwise. Trailmark accepts JSON only (``configure``), so messages cannot run code; the
# warning would only repeat on every start as root (a development machine, a container without USER).
warnings.filterwarnings("ignore", "You're running the worker with superuser privileges", SecurityWarning)


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    dispose_engine()
    install_outbox_publisher()
    freeze_startup_heap()
