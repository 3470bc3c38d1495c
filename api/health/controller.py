"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Response, get
from litestar.openapi import ResponseSpec
from sqlalchemy import text

from tenants.isolation import system_session
from tenants.isolation.migrate import migrations_at_head
from tenants.redis_store import get_ingest_redis, get_redis
from tenants.settings import get_settings
from tenants.tracking.buffer import dead_letter_count

__all__ = ["health", "ready"]


class Readiness(msgspec.Struct):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]
    """``database``, ``migrations``, ``redis`` (and ``ingest_redis`` when the ingest buffer has a Redis of its own,
    ``TRAILMARK_INGEST_REDIS_URL``): ``ok`` or what is wrong."""
    ingest_dead_letters: int | None
    """Ingest batches parked for an operator (``trailmark ingest dead-letters``); null when Redis is down."""


@get("/health", tags=["health"], summary="Alive")
async def health() -> dict[str, str]:
    """Answers while the process serves; checks nothing else."""
    return {"status": "ok"}


@get(
    "/ready",
    tags=["health"],
    sync_to_thread=True,
    summary="Database, Redis and schema ready",
    responses={503: ResponseSpec(Readiness, description="Something is not ready; `checks` says what")},
)
def ready() -> Response[Readiness]:
    """200 when the database answers, its schema is at head and Redis answers; 503 otherwise. The ingest
    dead letters are reported, not judged: they need an operator (``trailmark ingest dead-letters``), not
    another instance."""
    checks: dict[str, str] = {}
    dead_letters: int | None = None
    try:
        with system_session() as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["migrations"] = "ok" if migrations_at_head(session.connection()) else "behind head"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"unreachable: {type(error).__name__}"
    settings = get_settings()
    separate = settings.ingest_redis != settings.redis_url
    try:  # reads every shard, so every cluster node that holds one answers
        dead_letters = dead_letter_count(get_ingest_redis(), shard_count=settings.ingest_shards)
        if separate:
            checks["ingest_redis"] = "ok"
    except Exception as error:
        checks["ingest_redis" if separate else "redis"] = f"unreachable: {type(error).__name__}"
    ok = all(value == "ok" for value in checks.values()) and len(checks) == (4 if separate else 3)
    return Response(Readiness("ready" if ok else "not ready", checks, dead_letters), status_code=200 if ok else 503)
