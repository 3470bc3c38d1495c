"""Membership sessions: the member's view of the one session store (tenants.sessions).

Idle timeout ``session_idle_minutes``, absolute timeout ``session_absolute_hours``; the key, the index and the
id rotation are the store's.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from tenants import sessions as store
from tenants.settings import get_settings

__all__ = [
    "MEMBER_SESSIONS",
    "MemberSession",
    "create_session",
    "destroy_all_sessions",
    "destroy_session",
    "read_session",
]

MEMBER_SESSIONS = store.SessionKind(
    name="session",
    index="member-sessions",
    idle_seconds=lambda settings: settings.session_idle_minutes * 60,
    absolute_seconds=lambda settings: settings.session_absolute_hours * 3600,
)


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


def _member_session(stored: store.StoredSession) -> MemberSession:
    return MemberSession(
        session_id=stored.session_id,
        tenant_id=str(stored.tenant_id),
        member_id=str(stored.user_id),
        contact_id=stored.data["contact_id"],
        membership_site_id=stored.data["membership_site_id"],
        visitor_id=stored.data.get("visitor_id"),
        created_at=stored.created_at,
    )


def create_session(
    tenant_id: UUID, member_id: UUID, contact_id: UUID, membership_site_id: UUID, visitor_id: UUID | None
) -> MemberSession:
    """A new session with a fresh 256-bit id (never one the browser offered)."""
    data = {
        "contact_id": str(contact_id),
        "membership_site_id": str(membership_site_id),
        "visitor_id": str(visitor_id) if visitor_id else None,
    }
    return _member_session(store.create(MEMBER_SESSIONS, tenant_id, member_id, data))


def read_session(tenant_id: UUID, session_id: str | None) -> MemberSession | None:
    """The live session behind a cookie value, its idle timer restarted; None if unknown or expired."""
    stored = store.read(MEMBER_SESSIONS, tenant_id, session_id)
    return _member_session(stored) if stored else None


def destroy_session(tenant_id: UUID, session_id: str) -> None:
    store.destroy(MEMBER_SESSIONS, tenant_id, session_id)


def destroy_all_sessions(tenant_id: UUID, member_id: UUID, *, keep: str | None = None) -> int:
    """End every session of a member (but ``keep``, a session id); returns how many ended."""
    return store.destroy_all(MEMBER_SESSIONS, tenant_id, member_id, keep=keep)
