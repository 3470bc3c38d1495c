"""Rate limits kept in Redis (shared by every process), keyed by tenant and subject."""

from __future__ import annotations

import contextlib
import logging
import time
from uuid import UUID

import redis

from tenants.errors import RateLimited
from tenants.redis_store import get_redis

__all__ = ["check_failures", "check_rate", "clear_failures", "record_failure"]

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


def _failure_key(tenant_id: UUID, bucket: str, subject: str) -> str:
    return f"trailmark:{tenant_id}:failures:{bucket}:{subject}"


def check_failures(tenant_id: UUID, bucket: str, subject: str, *, limit: int) -> None:
    """Refuse (429) while ``subject`` has ``limit`` recent failures; allowed if Redis is unreachable."""
    try:
        client = get_redis()
        key = _failure_key(tenant_id, bucket, subject)
        count = int(client.get(key) or 0)
        ttl = int(client.ttl(key))
    except (redis.RedisError, OSError) as error:
        log.warning("failure throttle unavailable (%s); allowing", error)
        return
    if count >= limit:
        raise RateLimited("too many failed attempts; wait and try again", retry_after=max(1, ttl))


def record_failure(tenant_id: UUID, bucket: str, subject: str, *, window_seconds: int) -> None:
    """Count a failure; the count expires ``window_seconds`` after the first one."""
    key = _failure_key(tenant_id, bucket, subject)
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.set(key, 0, ex=window_seconds, nx=True)  # the window starts at the first failure (Redis 6 too)
        pipe.incr(key)
        pipe.execute()
    except (redis.RedisError, OSError) as error:
        log.warning("failure throttle unavailable (%s)", error)


def clear_failures(tenant_id: UUID, bucket: str, subject: str) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        get_redis().delete(_failure_key(tenant_id, bucket, subject))
