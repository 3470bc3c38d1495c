"""Gauges read from Redis and PostgreSQL when ``/metrics`` is scraped: backlogs, lag, dead letters, ages.

They describe shared state (a stream, a queue, a table), so they are read at the source instead of being
kept by some process. Each source gets a short timeout, so a scrape never hangs on a server that is away:
a source that does not answer leaves its gauges out and says so in ``trailmark_up{component}`` (0), and the
scrape still answers 200 with everything else.

Across tenants PostgreSQL is read through ``trailmark_operations_gauges()``, an owner-run function that
returns counts and ages only (migration 0023); row-level security stays as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from tenants.models import Platform
from tenants.tracking.buffer import DEAD_LETTER_STREAM, GROUP, STREAM

__all__ = ["OperationsCollector"]

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
"""Per source and step (connect, then answer); libpq's connect timeout cannot be shorter than 2 s."""

_DATABASE_GAUGES = {
    "outbox_messages": ("trailmark_outbox_messages", "Outbox messages not yet handed to the broker, all tenants."),
    "outbox_oldest_age_seconds": (
        "trailmark_outbox_oldest_age_seconds",
        "Age of the oldest outbox message still waiting (0 when none waits).",
    ),
    "stripe_events_pending": (
        "trailmark_stripe_events_pending",
        "Stored Stripe events not yet processed, all tenants.",
    ),
}
_PLATFORM_GAUGES = {
    "conversions_queued": (
        "trailmark_conversions_queued",
        "Conversions queued for an ad platform (paused integrations' included), all tenants.",
    ),
    "conversions_oldest_queued_age_seconds": (
        "trailmark_conversions_oldest_queued_age_seconds",
        "Age of the oldest conversion queued for the platform (0 when none is).",
    ),
    "integrations_paused": (
        "trailmark_integrations_paused",
        "Integrations paused until their tenant reconnects them (a refused token, a missing permission).",
    ),
}


class OperationsCollector(Collector):
    """One scrape's reads of Redis and PostgreSQL, each bounded by :data:`TIMEOUT_SECONDS`."""

    def __init__(
        self,
        redis_url: str,
        database_url: str,
        *,
        queues: Sequence[str],
        max_backlog: int,
        timeout: float = TIMEOUT_SECONDS,
        broker_queues: Callable[[float], tuple[Mapping[str, int], int]] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.broker_queues = broker_queues
        """When the tasks are not on Redis (RabbitMQ: ``workers.app.queue_lengths``): reads, within the timeout it
        is given, the tasks waiting per queue and the dead letters. None reads Redis lists named after the queues."""
        self.database_url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.queues = tuple(queues)
        self.max_backlog = max_backlog
        self.timeout = timeout

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "trailmark_up", "1 when the scrape could read the component, else 0.", labels=["component"]
        )
        redis_metrics = self._read_redis()
        up.add_metric(["redis"], 0 if redis_metrics is None else 1)
        database_metrics = self._read_database()
        up.add_metric(["database"], 0 if database_metrics is None else 1)
        broker_metrics = self._read_broker() if self.broker_queues else []
        if self.broker_queues:
            up.add_metric(["broker"], 0 if broker_metrics is None else 1)
        limit = GaugeMetricFamily(
            "trailmark_ingest_backlog_limit_entries",
            "TRAILMARK_INGEST_MAX_BACKLOG: collect answers 503 once the backlog reaches it.",
            labels=["stream"],
        )
        limit.add_metric([STREAM], self.max_backlog)
        return [up, limit, *(redis_metrics or ()), *(database_metrics or ()), *(broker_metrics or ())]

    def _read_redis(self) -> list[Metric] | None:
        client = redis.Redis.from_url(
            self.redis_url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # one try: a scrape that fails says so, the next one tries again
        )
        try:
            pipe = client.pipeline(transaction=False)  # one round trip
            pipe.time()
            pipe.xlen(STREAM)
            pipe.xrange(STREAM, count=1)
            pipe.xpending(STREAM, GROUP)
            pipe.xlen(DEAD_LETTER_STREAM)
            for queue in () if self.broker_queues else self.queues:
                pipe.llen(queue)
            answers: list[Any] = pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as error:
            log.debug("metrics scrape could not read Redis: %s", error)
            return None
        finally:
            client.close()
        if isinstance(answers[0], Exception):
            return None
        (seconds, microseconds), backlog, oldest, pending, dead, *queued = answers
        now_ms = seconds * 1000 + microseconds // 1000
        lag = 0.0
        if isinstance(oldest, list) and oldest:
            # An entry id starts with the server's time when collect appended it, in milliseconds.
            lag = max(0, now_ms - int(oldest[0][0].split(b"-")[0])) / 1000
        in_flight = 0 if isinstance(pending, Exception) else int(pending["pending"])  # no group yet: none
        families: list[Metric] = [
            _gauge(
                "trailmark_ingest_backlog_entries",
                "Batches in the ingest stream: waiting or being stored.",
                STREAM,
                backlog,
            ),
            _gauge(
                "trailmark_ingest_pending_entries",
                "Batches an ingest worker read but has not stored yet.",
                STREAM,
                in_flight,
            ),
            _gauge(
                "trailmark_ingest_lag_seconds",
                "Age of the oldest batch not yet stored (0 when the stream is empty).",
                STREAM,
                lag,
            ),
            _gauge(
                "trailmark_ingest_dead_letters",
                "Batches ingest could not store, waiting for an operator (trailmark ingest dead-letters).",
                DEAD_LETTER_STREAM,
                dead,
            ),
        ]
        if not self.broker_queues:
            families.append(_waiting_tasks(zip(self.queues, queued, strict=True)))
        return families

    def _read_broker(self) -> list[Metric] | None:
        assert self.broker_queues is not None
        try:
            waiting, dead_letters = self.broker_queues(self.timeout)
        except Exception as error:  # whatever the client raises, the scrape goes on without these gauges
            log.debug("metrics scrape could not read the broker: %s", error)
            return None
        dead = GaugeMetricFamily(
            "trailmark_task_dead_letters",
            "Tasks the broker set aside: past their delivery limit (a worker died running each), or refused.",
        )
        dead.add_metric([], dead_letters)
        return [_waiting_tasks((queue, waiting.get(queue, 0)) for queue in self.queues), dead]

    def _read_database(self) -> list[Metric] | None:
        try:
            with psycopg.connect(
                self.database_url,
                connect_timeout=max(2, round(self.timeout)),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
                application_name="trailmark-metrics",
                autocommit=True,
            ) as connection:
                rows = connection.execute("SELECT gauge, platform, value FROM trailmark_operations_gauges()").fetchall()
        except psycopg.Error as error:
            log.debug("metrics scrape could not read PostgreSQL: %s", error)
            return None
        values: dict[tuple[str, str | None], float] = {(gauge, platform): value for gauge, platform, value in rows}
        families: list[Metric] = []
        for key, (name, documentation) in _DATABASE_GAUGES.items():
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], values.get((key, None), 0.0))
            families.append(family)
        for key, (name, documentation) in _PLATFORM_GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=["platform"])
            for platform in Platform:  # every platform, so a rate or an alert sees 0 instead of nothing
                family.add_metric([platform.value], values.get((key, platform.value), 0.0))
            families.append(family)
        return families


def _gauge(name: str, documentation: str, stream: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["stream"])
    family.add_metric([stream], value)
    return family


def _waiting_tasks(lengths: Iterable[tuple[str, Any]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "trailmark_queue_waiting_tasks", "Tasks waiting in a Celery queue for a worker.", labels=["queue"]
    )
    for queue, length in lengths:
        if not isinstance(length, Exception):
            family.add_metric([queue], length)
    return family
