"""Staff sessions: an opaque random id in the browser, the session itself in Redis (only a SHA-256 of the id is
a key). Idle and absolute timeouts as for members; every session of a user is indexed for "log out everywhere"."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from uuid import UUID

from tenants.redis_store import get_redis
from tenants.settings import get_settings

__all__ = ["StaffSession", "create_staff_session", "destroy_staff_session", "read_staff_session"]


@dataclass(frozen=True)
class StaffSession:
    session_id: str
    tenant_id: str
    user_id: str
    created_at: float

    @property
    def expires_at(self) -> float:
        return self.created_at + get_settings().session_absolute_hours * 3600


def _key(session_id: str) -> str:
    return f"trailmark:staff-session:{hashlib.sha256(session_id.encode()).hexdigest()}"


def _index(tenant_id: UUID | str, user_id: UUID | str) -> str:
    return f"trailmark:{tenant_id}:staff-sessions:{user_id}"


def create_staff_session(tenant_id: UUID, user_id: UUID) -> StaffSession:
    """A new session with a fresh 256-bit id (never one the browser offered)."""
    settings = get_settings()
    session = StaffSession(secrets.token_urlsafe(32), str(tenant_id), str(user_id), time.time())
    data = {k: v for k, v in asdict(session).items() if k != "session_id"}
    key = _key(session.session_id)
    index = _index(tenant_id, user_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.set(key, json.dumps(data), ex=settings.session_idle_minutes * 60)
    pipe.sadd(index, key)
    pipe.expire(index, settings.session_absolute_hours * 3600)
    pipe.execute()
    return session


def read_staff_session(session_id: str | None) -> StaffSession | None:
    """The live session behind a cookie value, its idle timer restarted; None if unknown or expired."""
    if not session_id or len(session_id) > 100:
        return None
    client = get_redis()
    key = _key(session_id)
    raw = client.get(key)
    if raw is None:
        return None
    session = StaffSession(session_id=session_id, **json.loads(raw))
    if time.time() >= session.expires_at:
        client.delete(key)
        return None
    client.expire(key, get_settings().session_idle_minutes * 60)
    return session


def destroy_staff_session(session_id: str) -> None:
    get_redis().delete(_key(session_id))
