"""Shared column helpers and the mixin every tenant-owned table uses."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import DateTime, event
from sqlmodel import Field, Session, SQLModel

from tenants.isolation import current_tenant_id

__all__ = ["TenantOwned", "new_id", "timestamp_field", "utcnow", "uuid7"]


def new_id() -> UUID:
    """A UUIDv7: time-ordered, so ids index well and double as a stable cursor for pagination."""
    return uuid7(time.time_ns() // 1_000_000, os.urandom(10))


def uuid7(millis: int, entropy: bytes) -> UUID:
    """A UUIDv7 of ``millis`` with 74 bits taken from ``entropy`` (10 bytes)."""
    rand = int.from_bytes(entropy[:10], "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68) << 64 & (0xFFF << 64)  # 12 random bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp_field(*, nullable: bool = False, **kwargs: Any) -> Any:
    """A timezone-aware timestamp column (PostgreSQL ``timestamptz``)."""
    if not nullable:
        kwargs.setdefault("default_factory", utcnow)
    return Field(sa_type=DateTime(timezone=True), nullable=nullable, **kwargs)


class TenantOwned(SQLModel):
    """Mixin of every tenant-owned table: ``tenant_id`` leads the primary key, and is filled from the
    session's tenant when left empty, so a service never chooses a tenant by hand."""

    tenant_id: UUID = Field(default=None, primary_key=True, foreign_key="tenants.id", ondelete="CASCADE")


@event.listens_for(Session, "before_flush")
def _fill_tenant_id(session: Session, _context: Any, _instances: Any) -> None:
    for obj in session.new:
        if isinstance(obj, TenantOwned) and obj.tenant_id is None:
            obj.tenant_id = current_tenant_id(session)
