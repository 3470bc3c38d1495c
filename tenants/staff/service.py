"""Staff log-in and who a staff session is: one implementation for the dashboard and its tests."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlmodel import col, func, select

from tenants.errors import Unauthorized
from tenants.isolation import tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.models import TenantUser, UserRole
from tenants.security.passwords import hash_password, verify_password

__all__ = ["StaffMember", "authenticate_staff", "staff_member"]

_DECOY_HASH = hash_password("not a password anyone has")
"""Verified against when the workspace or email is unknown, so timing does not tell which part was wrong."""


@dataclass(frozen=True)
class StaffMember:
    tenant_id: UUID
    user_id: UUID
    email: str
    role: UserRole


def authenticate_staff(workspace: str, email: str, password: str) -> StaffMember:
    """The staff member with this workspace (tenant slug), email and password, or :class:`Unauthorized`."""
    tenant_id = tenant_of_public_key("tenant_slug", workspace.strip().lower())
    user = None
    if tenant_id is not None:
        with tenant_session(tenant_id) as session:
            user = session.exec(
                select(TenantUser).where(func.lower(col(TenantUser.email)) == email.strip().lower())
            ).first()
    if user is None or not verify_password(user.password_hash, password):
        verify_password(_DECOY_HASH, password) if user is None else None
        raise Unauthorized("the workspace, email or password is wrong")
    return StaffMember(user.tenant_id, user.id, user.email, UserRole(user.role))


def staff_member(tenant_id: UUID, user_id: UUID) -> StaffMember | None:
    """The staff member behind a session, as the database has them now (a removed user is None)."""
    with tenant_session(tenant_id) as session:
        user = session.get(TenantUser, (tenant_id, user_id))
        return StaffMember(user.tenant_id, user.id, user.email, UserRole(user.role)) if user else None
