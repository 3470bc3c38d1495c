"""Rate limits kept in Redis (shared by every process), keyed by tenant and subject.

A limit across every tenant (an address guessing passwords in many workspaces) passes ``tenant_id=None``;
its keys carry ``all`` where a tenant's id would be.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from uuid import UUID

import redis

from tenants.errors import RateLimited
from tenants.redis_store import get_redis

__all__ = [
    "backoff_delay",
    "backoff_remaining",
    "check_failures",
    "check_rate",
    "clear_backoff",
    "clear_failures",
    "record_backoff_failure",
    "record_failure",
]

log = logging.getLogger(__name__)


def check_rate(tenant_id: UUID | None, bucket: str, subject: str, *, limit: int, window_seconds: int) -> None:
    """Count one attempt; raise :class:`RateLimited` past ``limit`` in the current window. With Redis
    unreachable the attempt is allowed: losing a real submission is worse than letting spam through
    for the length of an outage."""
    window = int(time.time()) // window_seconds
    key = f"trailmark:{tenant_id or 'all'}:rate:{bucket}:{subject}:{window}"
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


def _failure_key(tenant_id: UUID | None, bucket: str, subject: str) -> str:
    return f"trailmark:{tenant_id or 'all'}:failures:{bucket}:{subject}"


def check_failures(tenant_id: UUID | None, bucket: str, subject: str, *, limit: int) -> None:
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


def record_failure(tenant_id: UUID | None, bucket: str, subject: str, *, window_seconds: int) -> None:
    """Count a failure; the count expires ``window_seconds`` after the first one."""
    key = _failure_key(tenant_id, bucket, subject)
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.set(key, 0, ex=window_seconds, nx=True)  # the window starts at the first failure (Redis 6 too)
        pipe.incr(key)
        pipe.execute()
    except (redis.RedisError, OSError) as error:
        log.warning("failure throttle unavailable (%s)", error)


def clear_failures(tenant_id: UUID | None, bucket: str, subject: str) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        get_redis().delete(_failure_key(tenant_id, bucket, subject))


def _backoff_key(tenant_id: UUID, bucket: str, subject: str) -> str:
    return f"trailmark:{tenant_id}:backoff:{bucket}:{subject}"


def backoff_delay(failures: int, *, free: int, max_delay: int) -> int:
    """Seconds to wait after the latest of ``failures``: none for the first ``free``, then doubling, capped."""
    return 0 if failures < free else min(max_delay, 2 ** (failures - free))


def backoff_remaining(tenant_id: UUID, bucket: str, subject: str, *, free: int, max_delay: int) -> int:
    """Seconds ``subject`` must still wait before its next attempt (0: go ahead). The wait is capped at
    ``max_delay``, so a subject is slowed, never locked out. Allowed if Redis is unreachable."""
    try:
        failures, last = get_redis().hmget(_backoff_key(tenant_id, bucket, subject), "failures", "last")
    except (redis.RedisError, OSError) as error:
        log.warning("backoff unavailable (%s); allowing", error)
        return 0
    if failures is None or last is None:
        return 0
    wait_until = float(last) + backoff_delay(int(failures), free=free, max_delay=max_delay)
    return max(0, math.ceil(wait_until - time.time()))


def record_backoff_failure(tenant_id: UUID, bucket: str, subject: str, *, window_seconds: int) -> None:
    """Count a failure and note its time; the count is forgotten ``window_seconds`` after the latest one."""
    key = _backoff_key(tenant_id, bucket, subject)
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.hincrby(key, "failures", 1)
        pipe.hset(key, "last", repr(time.time()))
        pipe.expire(key, window_seconds)
        pipe.execute()
    except (redis.RedisError, OSError) as error:
        log.warning("backoff unavailable (%s)", error)


def clear_backoff(tenant_id: UUID, bucket: str, subject: str) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        get_redis().delete(_backoff_key(tenant_id, bucket, subject))
