"""Prometheus metrics of every Trailmark process, in prometheus-client's multi-process mode.

Counters and histograms live in the processes where things happen (collect in the API processes, tasks
in the worker's pool processes, database pools everywhere) and are written to files in
``PROMETHEUS_MULTIPROC_DIR``, which prometheus-client reads when it is first imported; the API's
``/metrics`` adds them up over every process of the host. What is best read from the source at scrape
time (backlogs, lag, dead letters, ages) comes from :mod:`tenants.metrics.operations`.

Without ``PROMETHEUS_MULTIPROC_DIR`` (a test process, a one-off command) the same metrics count in the
process alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

__all__ = [
    "COLLECT_BATCHES",
    "COLLECT_HITS",
    "CONTENT_TYPE",
    "DB_POOL_CAPACITY",
    "DB_POOL_IN_USE",
    "MULTIPROC_ENV",
    "TASK_DURATION",
    "TASK_FAILURES",
    "TASK_RETRIES",
    "TASK_RUNS",
    "forget_process",
    "prepare_directory",
    "process_role",
    "render",
    "set_process_role",
    "watch_pool",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format every Prometheus reads (every name here is a classic one, so nothing needs the newer format)."""

COLLECT_BATCHES = Counter(
    "trailmark_collect_batches",
    "POST /collect requests by what collect answered: outcome accepted, dropped, refused or unavailable.",
    ["outcome", "reason"],
)
COLLECT_HITS = Counter(
    "trailmark_collect_hits",
    "Hits of the batches collect decoded: accepted (queued for ingest), dropped (consent, bots) or unavailable.",
    ["outcome", "reason"],
)

TASK_RUNS = Counter("trailmark_task_runs", "Celery task runs that finished, whatever their outcome.", ["queue", "task"])
TASK_FAILURES = Counter(
    "trailmark_task_failures",
    "Celery tasks that failed for good (out of retries, or not retryable).",
    ["queue", "task"],
)
TASK_RETRIES = Counter("trailmark_task_retries", "Celery task runs that failed and were retried.", ["queue", "task"])
TASK_DURATION = Histogram(
    "trailmark_task_duration_seconds",
    "Wall time of a Celery task run.",
    ["queue", "task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

# Live processes only: a process that exits cleanly removes its share (forget_process).
DB_POOL_IN_USE = Gauge(
    "trailmark_db_pool_connections_in_use",
    "Database connections checked out of the pools of live processes, by process role.",
    ["role"],
    multiprocess_mode="livesum",
)
DB_POOL_CAPACITY = Gauge(
    "trailmark_db_pool_connections_capacity",
    "Size of the database pools of live processes (TRAILMARK_DATABASE_POOL_SIZE each), by process role.",
    ["role"],
    multiprocess_mode="livesum",
)

_role = "other"


def set_process_role(role: str) -> None:
    """Name this process in the pool gauges: ``api``, ``worker`` (a task pool process), else ``other``."""
    global _role  # noqa: PLW0603 - one role per process
    _role = role


def process_role() -> str:
    return _role


def watch_pool(engine: Engine, size: int) -> None:
    """Count ``engine``'s checked-out connections in :data:`DB_POOL_IN_USE` (under the role of the moment)."""
    role = _role
    DB_POOL_CAPACITY.labels(role).set(size)  # one engine per process: a new one replaces the last
    in_use = DB_POOL_IN_USE.labels(role)
    event.listen(engine, "checkout", lambda *_: in_use.inc())
    event.listen(engine, "checkin", lambda *_: in_use.dec())


def prepare_directory(path: Path) -> Path:
    """Make ``path`` ready for a new set of processes: created, and emptied of an earlier run's files, which
    would otherwise be added to this run's counters (prometheus-client's rule: wipe it before start-up)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def forget_process(pid: int | None = None) -> None:
    """A process that stops takes its live gauges (pool use) with it; its counters stay in the sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid or os.getpid())


def render(*collectors: Collector) -> bytes:
    """The exposition of every process's metrics (or this process's alone) plus ``collectors`` (read now)."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


class _Forward(Collector):
    """The process's own registry, as one collector of the scrape's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()
