"""Staff sessions: the dashboard's view of the one session store (tenants.sessions).

The cookie is ``<tenant id>.<random id>``: the tenant part only says where to look (every key carries the
tenant), the random part is the session. Timeouts are ``staff_session_idle_minutes`` and
``staff_session_absolute_hours``.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from tenants import sessions as store

__all__ = [
    "STAFF_SESSIONS",
    "StaffSession",
    "create_staff_session",
    "destroy_staff_session",
    "end_staff_sessions",
    "read_staff_session",
    "staff_session_count",
]

STAFF_SESSIONS = store.SessionKind(
    name="staff-session",
    index="staff-sessions",
    idle_seconds=lambda settings: settings.staff_session_idle_minutes * 60,
    absolute_seconds=lambda settings: settings.staff_session_absolute_hours * 3600,
)


@dataclass(frozen=True)
class StaffSession:
    cookie: str
    """What the browser holds: ``<tenant hex>.<session id>``."""
    tenant_id: UUID
    user_id: UUID
    expires_at: float


def _parts(cookie: str | None) -> tuple[UUID, str] | None:
    tenant_hex, dot, session_id = (cookie or "").partition(".")
    if not dot or not session_id or len(tenant_hex) != 32:
        return None
    try:
        return UUID(hex=tenant_hex), session_id
    except ValueError:
        return None


def _staff_session(stored: store.StoredSession) -> StaffSession:
    return StaffSession(
        f"{stored.tenant_id.hex}.{stored.session_id}", stored.tenant_id, stored.user_id, stored.expires_at
    )


def create_staff_session(tenant_id: UUID, user_id: UUID) -> StaffSession:
    """A new session with a fresh id (never one the browser offered)."""
    return _staff_session(store.create(STAFF_SESSIONS, tenant_id, user_id))


def read_staff_session(cookie: str | None) -> StaffSession | None:
    """The live session behind a cookie, its idle timer restarted; None if malformed, unknown or expired."""
    parts = _parts(cookie)
    if parts is None:
        return None
    stored = store.read(STAFF_SESSIONS, *parts)
    return _staff_session(stored) if stored else None


def destroy_staff_session(cookie: str) -> None:
    """End the session behind a cookie (a malformed or unknown one is ignored)."""
    parts = _parts(cookie)
    if parts is not None:
        store.destroy(STAFF_SESSIONS, *parts)


def end_staff_sessions(tenant_id: UUID, user_id: UUID, *, keep: str | None = None) -> int:
    """End every session of a staff member but the one behind ``keep`` (a cookie); how many ended."""
    parts = _parts(keep)
    kept = parts[1] if parts and parts[0] == tenant_id else None
    return store.destroy_all(STAFF_SESSIONS, tenant_id, user_id, keep=kept)


def staff_session_count(tenant_id: UUID, user_id: UUID) -> int:
    """How many sessions of a staff member are live."""
    return store.live_count(STAFF_SESSIONS, tenant_id, user_id)
