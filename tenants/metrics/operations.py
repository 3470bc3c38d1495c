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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from tenants.models import Platform
from tenants.redis_store import REDIS_UNAVAILABLE, sync_redis_client
from tenants.tracking.buffer import GROUP, shards

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
        ingest_redis_url: str | None = None,
        shard_count: int = 1,
        timeout: float = TIMEOUT_SECONDS,
        broker_queues: Callable[[float], tuple[Mapping[str, int], int]] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.broker_queues = broker_queues
        """When the tasks are not on Redis (RabbitMQ: ``workers.app.queue_lengths``): reads, within the timeout it
        is given, the tasks waiting per queue and the dead letters. None reads Redis lists named after the queues."""
        self.ingest_redis_url = ingest_redis_url or redis_url
        self.shards = shards(shard_count)
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
        ingest_metrics = self._read_ingest()
        if self.ingest_redis_url != self.redis_url:
            up.add_metric(["ingest_redis"], 0 if ingest_metrics is None else 1)
        elif ingest_metrics is None:
            redis_metrics = None
        database_metrics = self._read_database()
        up.add_metric(["database"], 0 if database_metrics is None else 1)
        broker_metrics = self._read_broker() if self.broker_queues else []
        if self.broker_queues:
            up.add_metric(["broker"], 0 if broker_metrics is None else 1)
        limit = GaugeMetricFamily(
            "trailmark_ingest_backlog_limit_entries",
            "A shard's share of TRAILMARK_INGEST_MAX_BACKLOG: collect answers 503 once its backlog reaches it.",
            labels=["stream"],
        )
        for each in self.shards:
            limit.add_metric([each.stream], -(-self.max_backlog // len(self.shards)))
        return [
            up,
            limit,
            *(ingest_metrics or ()),
            *(redis_metrics or ()),
            *(database_metrics or ()),
            *(broker_metrics or ()),
        ]

    def _client(self, url: str) -> Any:
        return sync_redis_client(
            url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # one try: a scrape that fails says so, the next one tries again
        )

    def _read_ingest(self) -> list[Metric] | None:
        """Per shard, from its own node in one round trip (the lag by that node's clock)."""
        try:
            client = self._client(self.ingest_redis_url)
        except REDIS_UNAVAILABLE as error:  # a cluster client asks for the slots at once
            log.debug("metrics scrape could not reach the ingest Redis: %s", error)
            return None
        try:
            script = client.register_script(_SHARD_STATE)
            states = [(each, script(keys=[each.stream, each.dead], args=[GROUP])) for each in self.shards]
        except REDIS_UNAVAILABLE as error:
            log.debug("metrics scrape could not read the ingest Redis: %s", error)
            return None
        finally:
            client.close()
        backlog = _family("trailmark_ingest_backlog_entries", "Batches in an ingest shard: waiting or being stored.")
        pending = _family("trailmark_ingest_pending_entries", "Batches an ingest worker read but has not stored yet.")
        lag = _family(
            "trailmark_ingest_lag_seconds", "Age of the shard's oldest batch not yet stored (0 when it is empty)."
        )
        dead = _family(
            "trailmark_ingest_dead_letters",
            "Batches ingest could not store, waiting for an operator (trailmark ingest dead-letters).",
        )
        for each, (now_ms, length, oldest_ms, in_flight, letters) in states:
            backlog.add_metric([each.stream], length)
            pending.add_metric([each.stream], in_flight)  # no group yet: none
            lag.add_metric([each.stream], max(0, now_ms - oldest_ms) / 1000 if length else 0.0)
            dead.add_metric([each.dead], letters)
        return [backlog, pending, lag, dead]

    def _read_redis(self) -> list[Metric] | None:
        """The Celery queues, on the main Redis."""
        client = self._client(self.redis_url)
        try:
            pipe = client.pipeline(transaction=False)  # one round trip
            pipe.ping()
            for queue in () if self.broker_queues else self.queues:
                pipe.llen(queue)
            answers: list[Any] = pipe.execute(raise_on_error=False)
        except REDIS_UNAVAILABLE as error:
            log.debug("metrics scrape could not read Redis: %s", error)
            return None
        finally:
            client.close()
        if isinstance(answers[0], Exception):
            return None
        _, *queued = answers
        if self.broker_queues:  # the tasks wait in RabbitMQ: _read_broker
            return []
        return [_waiting_tasks(zip(self.queues, queued, strict=True))]

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


def _waiting_tasks(lengths: Iterable[tuple[str, Any]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "trailmark_queue_waiting_tasks", "Tasks waiting in a Celery queue for a worker.", labels=["queue"]
    )
    for queue, length in lengths:
        if not isinstance(length, Exception):
            family.add_metric([queue], length)
    return family


def _family(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["stream"])


# KEYS: a shard's stream and dead letters; ARGV: the group. The node's time (ms), the backlog, the oldest entry's
# time (ms, an entry id starts with it), the entries pending in the group (0 before it exists), the dead letters.
_SHARD_STATE = """
local now = redis.call('TIME')
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest_ms = 0
if #oldest > 0 then oldest_ms = tonumber(string.match(oldest[1][1], '^(%d+)')) end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
local in_flight = 0
if ok then in_flight = pending[1] end
return {tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), redis.call('XLEN', KEYS[1]), oldest_ms,
  in_flight, redis.call('XLEN', KEYS[2])}
"""
