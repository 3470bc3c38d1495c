"""The Celery app. Settings come from the environment; database engines are created lazily in each
worker process after the fork (see ``tenants.isolation``)."""

from __future__ import annotations

import warnings

from celery import Celery
from celery.exceptions import SecurityWarning
from celery.schedules import crontab
from celery.signals import setup_logging, worker_process_init
from kombu import Exchange, Queue

from tenants.heap import freeze_startup_heap
from tenants.isolation import dispose_engine
from tenants.logs import configure_logging
from tenants.models import OutboxMessage
from tenants.outbox import service as outbox
from tenants.settings import get_settings
from workers import metrics as _task_metrics  # noqa: F401 - its signal receivers count every task

__all__ = [
    "QUEUES",
    "celery_app",
    "configure",
    "install_outbox_publisher",
    "outbox_publisher",
    "publish_outbox_message",
]

QUEUES = ("ingest", "identity", "conversions", "default")
TASK_ROUTES = {
    "trailmark.ingest.drain": {"queue": "ingest"},
    "trailmark.identity.*": {"queue": "identity"},
    "trailmark.conversions.*": {"queue": "conversions"},
}
"""Tasks not named here go to ``default``."""

celery_app = Celery(
    "trailmark",
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


def configure(app: Celery, redis_url: str, *, results: bool = True) -> None:
    """Apply Trailmark's broker settings to ``app``. ``results=False`` for an app that only publishes:
    it must not wait on (or reconnect to) the result store when Redis is down."""
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url if results else None,
        result_expires=3600,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A task is acknowledged only after it ran; a killed worker's task goes back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One exchange and routing key per queue, so a task goes to exactly the queue it names.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue="default",
        task_routes=TASK_ROUTES,
        task_track_started=False,
        task_time_limit=600,
        task_soft_time_limit=540,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Longer than any task may run, so an unacknowledged task is redelivered only if its worker died.
            "visibility_timeout": 3600,
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
        },
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


_settings = get_settings()
if _settings.redis_url:
    configure(celery_app, _settings.redis_url)


def outbox_publisher(redis_url: str) -> outbox.Publisher:
    """A publisher that hands each outbox row to the broker at ``redis_url``; the row id becomes the
    task id. A broker that is down fails the call within seconds, leaving the row for the sweep."""
    app = Celery("trailmark-outbox", set_as_current=False)
    configure(app, redis_url, results=False)

    def publish(message: OutboxMessage) -> None:
        app.send_task(
            message.task,
            args=[str(message.tenant_id), *message.args],
            queue=message.queue,
            task_id=str(message.id),
            retry=False,  # a failure leaves the row for the sweep instead of blocking the caller
        )

    return publish


def publish_outbox_message(message: OutboxMessage) -> None:
    """Publish to this process's broker (``TRAILMARK_REDIS_URL``)."""
    global _publish  # noqa: PLW0603 - built once per process, on first use
    if _publish is None:
        _publish = outbox_publisher(celery_app.conf.broker_url)
    _publish(message)


_publish: outbox.Publisher | None = None


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
