"""``GET /metrics``: Prometheus text format for operators, behind a bearer token.

Off (404) unless ``TRAILMARK_METRICS_TOKEN`` is set: nothing is exposed by default and nothing says there is
something to find. With it, a scrape without ``Authorization: Bearer <token>`` or with another token gets
401. Not part of the tenants' API, so not in its OpenAPI schema.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any

from litestar import Request, Response, get

from api.problems import problem
from tenants.metrics import CONTENT_TYPE, render
from tenants.metrics.operations import OperationsCollector
from tenants.settings import get_settings
from workers.app import QUEUES, is_rabbitmq, queue_lengths

__all__ = ["metrics"]


@get("/metrics", include_in_schema=False, sync_to_thread=True)
def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
    """Every process's counters of this host, and the backlogs read now (a few seconds at most)."""
    settings = get_settings()
    if settings.metrics_token is None:
        return problem(404, "not found")
    if not _bearer_matches(request.headers.get("authorization"), settings.metrics_token):
        return problem(401, "a metrics token is required", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    assert settings.redis_url is not None and settings.database_url is not None  # the API serves with both
    broker = settings.task_broker_url or settings.redis_url
    operations = OperationsCollector(
        settings.redis_url,
        settings.database_url,
        queues=QUEUES,
        max_backlog=settings.ingest_max_backlog,
        broker_queues=functools.partial(queue_lengths, broker) if is_rabbitmq(broker) else None,
        ingest_redis_url=settings.ingest_redis,
        shard_count=settings.ingest_shards,
    )
    return Response(render(operations), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, presented = (header or "").partition(" ")
    # Constant time, so the answer's timing says nothing about how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
