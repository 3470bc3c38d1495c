"""Registrations waiting for their address to be proved: what the register form collected, in Redis (members of
a membership site, partners applying to a program).

Nothing is written to the database before the owner of the address follows the emailed link, so a
stranger who registers with someone else's address changes no contact, member or visitor. The link
carries only a signed id (tokens name ids, never personal data); the record behind it expires with
the link, so an unconfirmed registration leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from uuid import UUID

from tenants.models import new_id
from tenants.redis_store import get_redis

__all__ = ["PendingRegistration", "load_pending", "save_pending"]


@dataclass(frozen=True)
class PendingRegistration:
    id: UUID
    place_id: UUID
    """What the registration is for: the membership site, or the partner program applied to."""
    email: str
    first_name: str | None
    next_path: str | None
    """The page the person registered from: they return to it once registered."""


def _key(tenant_id: UUID, registration_id: UUID) -> str:
    return f"trailmark:{tenant_id}:registration:{registration_id}"


def save_pending(
    tenant_id: UUID,
    place_id: UUID,
    *,
    email: str,
    first_name: str | None,
    next_path: str | None,
    lifetime_seconds: int,
) -> PendingRegistration:
    """Keep a registration for ``lifetime_seconds`` (the life of its link) under a fresh id."""
    pending = PendingRegistration(new_id(), place_id, email, first_name, next_path)
    data = {k: str(v) if isinstance(v, UUID) else v for k, v in asdict(pending).items() if k != "id"}
    get_redis().set(_key(tenant_id, pending.id), json.dumps(data), ex=lifetime_seconds)
    return pending


def load_pending(tenant_id: UUID, registration_id: UUID) -> PendingRegistration | None:
    """The registration behind a link, or None once it expired (or never existed)."""
    raw = get_redis().get(_key(tenant_id, registration_id))
    if raw is None:
        return None
    data = json.loads(raw)
    return PendingRegistration(
        id=registration_id,
        place_id=UUID(data.get("place_id") or data["membership_site_id"]),  # links mailed before the rename
        email=data["email"],
        first_name=data["first_name"],
        next_path=data["next_path"],
    )
