"""Pending staff invitations, kept in Redis until they are accepted, revoked or 72 hours old.

Like a pending registration, an invitation is nothing in the database until its link is followed: accepting it
creates the staff member. Each tenant's invitations are one hash (id → record), so the staff screen lists them in
one read; taking one out (``claim``) is a single ``HDEL``, so a link is used once even when followed twice at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from uuid import UUID

from tenants.models import UserRole, new_id
from tenants.redis_store import get_redis

__all__ = ["INVITATION_LIFETIME", "StaffInvitation", "claim", "load", "load_all", "remove", "resent", "save"]

INVITATION_LIFETIME = 72 * 3600


@dataclass(frozen=True)
class StaffInvitation:
    id: UUID
    email: str
    role: UserRole
    invited_by: str
    """The inviter's email, copied (the inviter may be gone by the time it is accepted)."""
    created_at: float
    expires_at: float
    sends: int = 1
    """How many times its link was mailed: only the latest link works."""

    @property
    def expires_on(self) -> str:
        """The deadline as people read it (UTC, to the minute)."""
        return datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


def _key(tenant_id: UUID) -> str:
    return f"trailmark:{tenant_id}:staff-invitations"


def _decode(invitation_id: str | bytes, raw: str | bytes) -> StaffInvitation:
    record = json.loads(raw)
    return StaffInvitation(
        id=UUID(invitation_id.decode() if isinstance(invitation_id, bytes) else invitation_id),
        email=record["email"],
        role=UserRole(record["role"]),
        invited_by=record["invited_by"],
        created_at=float(record["created_at"]),
        expires_at=float(record["expires_at"]),
        sends=int(record["sends"]),
    )


def save(tenant_id: UUID, invitation: StaffInvitation | None = None, **fields: str | UserRole) -> StaffInvitation:
    """Store ``invitation`` (or a new one made of ``fields``: email, role, invited_by)."""
    if invitation is None:
        now = time.time()
        invitation = StaffInvitation(
            id=new_id(),
            email=str(fields["email"]),
            role=UserRole(fields["role"]),
            invited_by=str(fields["invited_by"]),
            created_at=now,
            expires_at=now + INVITATION_LIFETIME,
        )
    record = {k: (v.value if isinstance(v, UserRole) else v) for k, v in asdict(invitation).items() if k != "id"}
    client = get_redis()
    client.hset(_key(tenant_id), str(invitation.id), json.dumps(record))
    # The hash lives as long as its youngest invitation; expired entries are pruned as they are read.
    client.expireat(_key(tenant_id), int(max(invitation.expires_at, time.time() + INVITATION_LIFETIME)) + 60)
    return invitation


def resent(tenant_id: UUID, invitation: StaffInvitation) -> StaffInvitation:
    """The invitation with a fresh link (earlier links die) and a fresh 72 hours."""
    return save(
        tenant_id, replace(invitation, sends=invitation.sends + 1, expires_at=time.time() + INVITATION_LIFETIME)
    )


def load(tenant_id: UUID, invitation_id: UUID) -> StaffInvitation | None:
    """The pending invitation, or None once accepted, revoked or expired."""
    raw = get_redis().hget(_key(tenant_id), str(invitation_id))
    invitation = _decode(str(invitation_id), raw) if raw is not None else None
    return invitation if invitation is not None and not invitation.expired else None


def load_all(tenant_id: UUID) -> list[StaffInvitation]:
    """Every pending invitation, oldest first (expired ones are dropped on the way)."""
    client = get_redis()
    invitations = [_decode(k, v) for k, v in client.hgetall(_key(tenant_id)).items()]
    expired = [str(i.id) for i in invitations if i.expired]
    if expired:
        client.hdel(_key(tenant_id), *expired)
    return sorted((i for i in invitations if not i.expired), key=lambda i: i.created_at)


def remove(tenant_id: UUID, invitation_id: UUID) -> bool:
    """Take an invitation out (revoked or accepted); True for the one caller that did."""
    return bool(get_redis().hdel(_key(tenant_id), str(invitation_id)))


claim = remove
"""Accepting uses the invitation up: the first claim wins, any other finds nothing."""
