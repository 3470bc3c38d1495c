"""Rate limits kept in Redis (shared by every process), keyed by tenant and subject."""

from __future__ import annotations

import logging
import time
from uuid import UUID

import redis

from tenants.errors import RateLimited
from tenants.redis_store import get_redis

__all__ = ["check_rate"]

log = logging.getLogger(__name__)


def check_rate(tenant_id: UUID, bucket: str, subject: str, *, limit: int, window_seconds: int) -> None:
    """Count one attempt; raise :class:`RateLimited` past ``limit`` in the current window. With Redis
    unreachable the attempt is allowed: losing a real submission is worse than letting spam through
    for the length of an outage."""
    window = int(time.time()) // window_seconds
    key = f"trailmark:{tenant_id}:rate:{bucket}:{subject}:{window}"
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, window_seconds + 1)
        count = int(pipe.execute()[0])
    except (redis.RedisError, OSError) as error:
        log.warning("rate limit unavailable (%s); allowing", error)
        return
    if count > limit:
        retry_after = window_seconds - int(time.time()) % window_seconds
        raise RateLimited("too many attempts; retry later", retry_after=max(1, retry_after))
