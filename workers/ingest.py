"""Ingest tasks: drain the collect stream into PostgreSQL; keep visit partitions ahead of time."""

from __future__ import annotations

from sqlalchemy import text

from tenants.isolation import system_session
from tenants.redis_store import get_ingest_redis
from tenants.settings import get_settings
from tenants.tracking.buffer import IngestBuffer
from tenants.tracking.ingest import drain
from workers.app import celery_app

__all__ = ["drain_ingest_stream", "ensure_visit_partitions"]

_buffer: IngestBuffer | None = None


@celery_app.task(name="trailmark.ingest.drain", ignore_result=True, acks_late=True)
def drain_ingest_stream(max_seconds: float = 5.0) -> int:
    """Beat sends this every second; each run stores until the shards are empty. Concurrent runs (of the
    processes of every ingest worker) take shards under leases, so they share the work without overlap."""
    global _buffer  # noqa: PLW0603 - one consumer (name and connection) per worker process
    if _buffer is None:
        settings = get_settings()
        _buffer = IngestBuffer(
            get_ingest_redis(),
            settings.ingest_claim_idle_ms,
            shard_count=settings.ingest_shards,
            lease_ms=settings.ingest_lease_ms,
        )
    return drain(_buffer, max_seconds=max_seconds).stored_visits


@celery_app.task(name="trailmark.ingest.ensure_visit_partitions", ignore_result=True)
def ensure_visit_partitions(months_ahead: int = 3) -> int:
    """Create monthly visit partitions from last month to ``months_ahead`` ahead (idempotent)."""
    with system_session() as session:
        created = session.execute(
            text("SELECT trailmark_ensure_visit_partitions((now() - interval '1 month')::date, :months)"),
            {"months": months_ahead + 2},
        ).scalar()
    return int(created or 0)
