"""Membership sessions: an opaque random id in the browser, the session itself in Redis.

Only a SHA-256 of the id is used as the key, so a Redis dump holds no usable session. A session ends
after ``session_idle_minutes`` without use (the key's TTL) or ``session_absolute_hours`` after login
(checked on every read). Each member's live sessions are indexed, so a password change or "log out
everywhere" ends them all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from uuid import UUID

from tenants.redis_store import get_redis
from tenants.settings import get_settings

__all__ = ["MemberSession", "create_session", "destroy_all_sessions", "destroy_session", "read_session"]


@dataclass(frozen=True)
class MemberSession:
    session_id: str
    tenant_id: str
    member_id: str
    contact_id: str
    membership_site_id: str
    visitor_id: str | None
    created_at: float
    """Seconds since the epoch: the absolute timeout counts from here."""

    @property
    def expires_at(self) -> float:
        return self.created_at + get_settings().session_absolute_hours * 3600


def _key(tenant_id: UUID | str, session_id: str) -> str:
    return f"trailmark:{tenant_id}:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


def _index(tenant_id: UUID | str, member_id: UUID | str) -> str:
    return f"trailmark:{tenant_id}:member-sessions:{member_id}"


def create_session(
    tenant_id: UUID, member_id: UUID, contact_id: UUID, membership_site_id: UUID, visitor_id: UUID | None
) -> MemberSession:
    """A new session with a fresh 256-bit id (never one the browser offered)."""
    settings = get_settings()
    session = MemberSession(
        session_id=secrets.token_urlsafe(32),
        tenant_id=str(tenant_id),
        member_id=str(member_id),
        contact_id=str(contact_id),
        membership_site_id=str(membership_site_id),
        visitor_id=str(visitor_id) if visitor_id else None,
        created_at=time.time(),
    )
    data = {k: v for k, v in asdict(session).items() if k != "session_id"}
    key = _key(tenant_id, session.session_id)
    index = _index(tenant_id, member_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.set(key, json.dumps(data), ex=settings.session_idle_minutes * 60)
    pipe.sadd(index, key)
    pipe.expire(index, settings.session_absolute_hours * 3600)
    pipe.execute()
    return session


def read_session(tenant_id: UUID, session_id: str | None) -> MemberSession | None:
    """The live session behind a cookie value, its idle timer restarted; None if unknown or expired."""
    if not session_id or len(session_id) > 100:
        return None
    client = get_redis()
    key = _key(tenant_id, session_id)
    raw = client.get(key)
    if raw is None:
        return None
    data = json.loads(raw)
    session = MemberSession(session_id=session_id, **data)
    if session.tenant_id != str(tenant_id) or time.time() >= session.expires_at:
        destroy_session(tenant_id, session_id)
        return None
    client.expire(key, get_settings().session_idle_minutes * 60)
    return session


def destroy_session(tenant_id: UUID, session_id: str) -> None:
    get_redis().delete(_key(tenant_id, session_id))


def destroy_all_sessions(tenant_id: UUID, member_id: UUID, *, keep: str | None = None) -> int:
    """End every session of a member (but ``keep``, a session id); returns how many ended."""
    client = get_redis()
    index = _index(tenant_id, member_id)
    kept = _key(tenant_id, keep) if keep else None
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.smembers(index)]
    doomed = [k for k in keys if k != kept]
    if doomed:
        pipe = client.pipeline(transaction=True)
        pipe.delete(*doomed)
        pipe.srem(index, *doomed)
        pipe.execute()
    return len(doomed)
