"""The process's Redis clients (sync): the main one (readiness, rate limits, sessions, the consent mirror) and the
ingest buffer's, which may be a Redis Cluster.

``TRAILMARK_REDIS_URL`` names one node: it is also Celery's broker, and sessions keep a user's keys together in
transactions. ``TRAILMARK_INGEST_REDIS_URL`` (default: the same) may name a cluster,
``redis-cluster://[user:password@]host:port,host:port,...`` (any of its nodes; the client learns the rest), for
redis-py's :class:`redis.cluster.RedisCluster`. Everything on it keeps its multi-key commands and scripts inside
one hash tag (``tenants/tracking/buffer.py``, ``tenants/tracking/cookieless.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster

from tenants.settings import get_settings

__all__ = [
    "CLUSTER_SCHEME",
    "REDIS_UNAVAILABLE",
    "ClusterUrl",
    "async_redis_client",
    "get_ingest_redis",
    "get_redis",
    "parse_cluster_url",
    "sync_redis_client",
]

CLUSTER_SCHEME = "redis-cluster"
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)
"""What a Redis call raises when its node (or a cluster's slot) cannot answer: redis-py's cluster errors such as
``SlotNotCoveredError`` (a master down past the node timeout) are not ``RedisError``s."""
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5

_client: redis.Redis | None = None
_ingest: Any = None
_pid: int | None = None


@dataclass(frozen=True)
class ClusterUrl:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterUrl | None:
    """``redis-cluster://[user:password@]host:port,host:port``, or None for a one-node URL."""
    scheme, _, rest = url.partition("://")
    if scheme != CLUSTER_SCHEME:
        return None
    credentials, _, hosts = rest.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    nodes = []
    for node in hosts.split("/", 1)[0].split(","):
        host, _, port = node.strip().rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterUrl(tuple(nodes), unquote(username) or None, unquote(password) or None)


def sync_redis_client(url: str, **options: Any) -> Any:
    """A sync client for ``url``: :class:`redis.cluster.RedisCluster` for a cluster URL, else :class:`redis.Redis`."""
    options = {"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS, "socket_timeout": READ_TIMEOUT_SECONDS, **options}
    cluster = parse_cluster_url(url)
    if cluster is None:
        return redis.Redis.from_url(url, **options)
    options.pop("health_check_interval", None)
    return redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in cluster.nodes],
        username=cluster.username,
        password=cluster.password,
        **options,
    )


def async_redis_client(url: str, **options: Any) -> Any:
    """An asyncio client for ``url`` (collect's), a cluster's or one node's as :func:`sync_redis_client`."""
    options = {"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS, "socket_timeout": READ_TIMEOUT_SECONDS, **options}
    cluster = parse_cluster_url(url)
    if cluster is None:
        return aioredis.Redis.from_url(url, **options)
    return aiocluster.RedisCluster(
        startup_nodes=[aiocluster.ClusterNode(host, port) for host, port in cluster.nodes],
        username=cluster.username,
        password=cluster.password,
        **options,
    )


def get_redis() -> redis.Redis:
    """The main Redis (``TRAILMARK_REDIS_URL``), one client per process."""
    global _client, _ingest, _pid  # noqa: PLW0603 - one client (and pool) per process
    if _pid != os.getpid():
        _client, _ingest, _pid = None, None, os.getpid()
    if _client is None:
        url = get_settings().redis_url
        if url is None:
            raise RuntimeError("TRAILMARK_REDIS_URL is not set")
        _client = sync_redis_client(url, health_check_interval=30)
    return _client


def get_ingest_redis() -> Any:
    """The ingest buffer's Redis (``TRAILMARK_INGEST_REDIS_URL``, else the main one): a ``redis.Redis`` or a
    ``RedisCluster``, which take the same commands for keys of one hash tag."""
    global _ingest  # noqa: PLW0603 - one client (and pool) per process
    main = get_redis()  # also resets both after a fork
    if _ingest is None:
        settings = get_settings()
        url = settings.ingest_redis
        _ingest = main if url == settings.redis_url else sync_redis_client(url or "", health_check_interval=30)
    return _ingest
