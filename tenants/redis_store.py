"""The process's Redis client (sync), for readiness checks, rate limits and the ingest buffer."""

from __future__ import annotations

import os

import redis

from tenants.settings import get_settings

__all__ = ["get_redis"]

_client: redis.Redis | None = None
_pid: int | None = None


def get_redis() -> redis.Redis:
    global _client, _pid  # noqa: PLW0603 - one client (and pool) per process
    if _client is None or _pid != os.getpid():
        url = get_settings().redis_url
        if url is None:
            raise RuntimeError("TRAILMARK_REDIS_URL is not set")
        _client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
        _pid = os.getpid()
    return _client
