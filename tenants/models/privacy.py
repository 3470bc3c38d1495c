"""Erasing a person and how long a tenant keeps visitors: the erasure requests with their reports, and each
tenant's retention policy."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, ForeignKeyConstraint, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = ["Erasure", "ErasureStatus", "PrivacySettings"]


class ErasureStatus(StrEnum):
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    """A member asked from their account page; the tenant confirms (or declines) it."""
    QUEUED = "queued"
    """Confirmed: the worker erases the person."""
    DONE = "done"
    DECLINED = "declined"
    FAILED = "failed"
    """The worker could not finish (nothing was erased: it is one transaction); the report names the error's
    kind, and the tenant can ask again."""


class Erasure(TenantOwned, table=True):
    """One request to erase a person, and once done its report: what was deleted, kept and anonymised, who asked
    and when. It never holds personal data, so it outlives what it erased."""

    __tablename__ = "erasures"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"),
    )

    id: UUID = Field(default_factory=new_id, primary_key=True)
    contact_id: UUID
    """The person; after the erase, the anonymous placeholder that keeps their purchases."""
    status: ErasureStatus = Field(sa_type=Text)
    requested_via: str = Field(sa_type=Text)
    """api, dashboard or member (the person, from their account page)."""
    requested_by: str = Field(sa_type=Text)
    """``api_key:<id>``, ``staff:<id>`` or ``member:<id>``: ids, not names."""
    requested_at: datetime = timestamp_field()
    confirmed_by: str | None = Field(default=None, sa_type=Text)
    confirmed_at: datetime | None = timestamp_field(nullable=True, default=None)
    finished_at: datetime | None = timestamp_field(nullable=True, default=None)
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))


class PrivacySettings(TenantOwned, table=True):
    """A tenant's retention policy (one row; absent means the defaults) and what its last expiry run did."""

    __tablename__ = "privacy_settings"

    anonymous_visitor_months: int = 13
    """Anonymous visitors and their visits go this many months after their last activity (CNIL: 13)."""
    identified_visit_months: int | None = None
    """Identified contacts' visits go this many months after they happened; None: kept until erased."""
    updated_at: datetime = timestamp_field()
    last_expired_at: datetime | None = timestamp_field(nullable=True, default=None)
    last_expired_visitors: int = Field(default=0, sa_type=BigInteger)
    last_expired_visits: int = Field(default=0, sa_type=BigInteger)
