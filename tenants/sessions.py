"""Server-side login sessions in Redis, for every kind of login (staff of the dashboard, members of a site).

The browser holds an opaque 256-bit random id; Redis holds the session under the SHA-256 of that id, so a Redis
dump holds no usable session. A session ends after its kind's idle time without use (the key's TTL, restarted on
each read) or its absolute lifetime after login (checked on each read). Each user's live sessions are indexed
(a sorted set scored by their absolute deadline), so a password change, a reset, a role change or "log out
everywhere" ends them all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from tenants.redis_store import get_redis
from tenants.settings import Settings, get_settings

__all__ = ["SessionKind", "StoredSession", "create", "destroy", "destroy_all", "live_count", "read"]

MAX_SESSION_ID_LENGTH = 100


@dataclass(frozen=True)
class SessionKind:
    """One kind of login: where its keys live and how long its sessions last."""

    name: str
    """The key segment of its sessions: ``trailmark:{tenant}:{name}:{sha256 of id}``."""
    index: str
    """The key segment of each user's index: ``trailmark:{tenant}:{index}:{user}``."""
    idle_seconds: Callable[[Settings], int]
    absolute_seconds: Callable[[Settings], int]


@dataclass(frozen=True)
class StoredSession:
    session_id: str
    tenant_id: UUID
    user_id: UUID
    created_at: float
    """Seconds since the epoch: the absolute timeout counts from here."""
    expires_at: float
    """The absolute deadline, fixed at login."""
    data: dict[str, Any] = field(default_factory=dict)
    """What the kind keeps besides the user (ids only)."""


def _key(kind: SessionKind, tenant_id: UUID, session_id: str) -> str:
    return f"trailmark:{tenant_id}:{kind.name}:{hashlib.sha256(session_id.encode()).hexdigest()}"


def _index(kind: SessionKind, tenant_id: UUID, user_id: UUID) -> str:
    return f"trailmark:{tenant_id}:{kind.index}:{user_id}"


def create(kind: SessionKind, tenant_id: UUID, user_id: UUID, data: dict[str, Any] | None = None) -> StoredSession:
    """A new session with a fresh 256-bit id (never one the browser offered)."""
    settings = get_settings()
    now = time.time()
    absolute = kind.absolute_seconds(settings)
    session = StoredSession(secrets.token_urlsafe(32), tenant_id, user_id, now, now + absolute, dict(data or {}))
    record = {"user_id": str(user_id), "created_at": now, "expires_at": session.expires_at, "data": session.data}
    key = _key(kind, tenant_id, session.session_id)
    index = _index(kind, tenant_id, user_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.set(key, json.dumps(record), ex=min(kind.idle_seconds(settings), absolute))
    pipe.zremrangebyscore(index, "-inf", now)  # sessions past their deadline are gone already
    pipe.zadd(index, {key: session.expires_at})
    pipe.expire(index, absolute)
    pipe.execute()
    return session


def read(kind: SessionKind, tenant_id: UUID, session_id: str | None) -> StoredSession | None:
    """The live session behind a cookie value, its idle timer restarted; None if unknown or expired."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return None
    client = get_redis()
    key = _key(kind, tenant_id, session_id)
    raw = client.get(key)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        session = StoredSession(
            session_id=session_id,
            tenant_id=tenant_id,
            user_id=UUID(record["user_id"]),
            created_at=float(record["created_at"]),
            expires_at=float(record["expires_at"]),
            data=dict(record.get("data") or {}),
        )
    except (ValueError, KeyError, TypeError):
        client.delete(key)  # a record this code did not write (an older layout): the login is simply over
        return None
    remaining = session.expires_at - time.time()
    if remaining <= 0:
        destroy(kind, tenant_id, session_id)
        return None
    client.expire(key, max(1, min(kind.idle_seconds(get_settings()), int(remaining))))
    return session


def destroy(kind: SessionKind, tenant_id: UUID, session_id: str) -> None:
    """End one session (unknown ids are ignored)."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return
    client = get_redis()
    key = _key(kind, tenant_id, session_id)
    raw = client.get(key)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    user_id = _user_of(raw)
    if user_id is not None:
        pipe.zrem(_index(kind, tenant_id, user_id), key)
    pipe.execute()


def _user_of(raw: str | bytes | None) -> UUID | None:
    try:
        return UUID(json.loads(raw)["user_id"]) if raw is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def destroy_all(kind: SessionKind, tenant_id: UUID, user_id: UUID, *, keep: str | None = None) -> int:
    """End every session of a user but ``keep`` (a session id); returns how many live ones ended."""
    client = get_redis()
    index = _index(kind, tenant_id, user_id)
    kept = _key(kind, tenant_id, keep) if keep else None
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in client.zrange(index, 0, -1)]
    doomed = [k for k in keys if k != kept]
    if not doomed:
        return 0
    pipe = client.pipeline(transaction=True)
    pipe.delete(*doomed)
    pipe.zrem(index, *doomed)
    return int(pipe.execute()[0])


def live_count(kind: SessionKind, tenant_id: UUID, user_id: UUID) -> int:
    """How many sessions of the user are still live (idle-expired ones are not counted)."""
    client = get_redis()
    keys = client.zrangebyscore(_index(kind, tenant_id, user_id), time.time(), "+inf")
    return int(client.exists(*keys)) if keys else 0
