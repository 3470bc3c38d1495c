"""Tenants and who may act for them: tenant users and API keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import Column, ForeignKeyConstraint, Index, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = ["ApiKey", "AuditEntry", "Scope", "Tenant", "TenantUser", "UserRole"]


class Scope(StrEnum):
    """What an API key may do. ``admin`` manages keys and tenant settings."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class UserRole(StrEnum):
    """What a staff member may do in the dashboard, strongest first. Each role includes those below it."""

    OWNER = "owner"
    """Everything, including staff and API keys."""
    ADMIN = "admin"
    """Everything but staff and API keys."""
    EDITOR = "editor"
    """Changes sites, forms, links, pages and contacts."""
    VIEWER = "viewer"
    """Reads; changes nothing."""

    @property
    def rank(self) -> int:
        return _ROLE_RANKS[self]

    def includes(self, other: UserRole) -> bool:
        """Whether this role may do what ``other`` may."""
        return self.rank >= other.rank


_ROLE_RANKS = {UserRole.OWNER: 4, UserRole.ADMIN: 3, UserRole.EDITOR: 2, UserRole.VIEWER: 1}


class Tenant(SQLModel, table=True):
    """A business using Trailmark. Its own row is visible only inside its own tenant scope."""

    __tablename__ = "tenants"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=63, unique=True)
    """Public handle used in hosted page URLs."""
    custom_domain: str | None = Field(default=None, max_length=253)
    """A host name of the tenant's own that serves its hosted pages (CNAME to Trailmark)."""
    created_at: datetime = timestamp_field()


class TenantUser(TenantOwned, table=True):
    """A person who runs the tenant's account (dashboard login). Not a contact."""

    __tablename__ = "tenant_users"
    __table_args__ = (Index("tenant_users_email_key", "tenant_id", func.lower(Column("email")), unique=True),)

    id: UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(max_length=320)
    password_hash: str
    role: UserRole = Field(sa_type=Text)
    created_at: datetime = timestamp_field()


class ApiKey(TenantOwned, table=True):
    """A bearer credential for the REST API. Only a SHA-256 of its secret is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["tenant_users.tenant_id", "tenant_users.id"],
            ondelete="SET NULL (created_by)",
        ),
        # Unique per tenant (Citus shards by tenant); migration 0020 also indexes the hash alone for the lookup.
        UniqueConstraint("tenant_id", "secret_hash", name="api_keys_secret_hash_key"),
    )

    id: UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    """The first characters of the secret, shown in lists so people can tell keys apart."""
    secret_hash: str = Field(max_length=64)
    scopes: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    created_by: UUID | None = Field(default=None)
    created_at: datetime = timestamp_field()
    last_used_at: datetime | None = timestamp_field(nullable=True, default=None)
    revoked_at: datetime | None = timestamp_field(nullable=True, default=None)


class AuditEntry(TenantOwned, table=True):
    """Append-only (the app role may insert and read, never change or delete): a staff action that changed
    something or revealed a sensitive field. The actor's email is copied, so the entry outlives the account."""

    __tablename__ = "audit_log"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    at: datetime = timestamp_field()
    actor_id: UUID | None = None
    actor_email: str = Field(max_length=320)
    action: str = Field(max_length=100)
    """What was done, as ``<area>.<verb>``: ``site.update``, ``contact.reveal``, ``staff.invite`` …"""
    subject: str | None = Field(default=None, max_length=200)
    """What it was done to, as ``<kind>:<id>``."""
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    """What changed (field names, never secrets or sensitive values)."""
