"""Conversions to ad platforms: the tenant's integrations (one ad account or pixel each)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import Column, ForeignKeyConstraint, LargeBinary, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = ["Integration", "IntegrationStatus", "Platform"]


class Platform(StrEnum):
    META = "meta"
    GOOGLE_ADS = "google_ads"
    TIKTOK = "tiktok"


class IntegrationStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    """Nothing is sent (conversions wait, queued) until the tenant reconnects: ``paused_reason`` says why."""


class Integration(TenantOwned, table=True):
    """One destination of conversions: a Meta pixel, a Google Ads account or a TikTok pixel of the tenant,
    for all its sites or one. The secret (access or refresh token) is encrypted at rest and never leaves
    the server."""

    __tablename__ = "integrations"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
    )

    id: UUID = Field(default_factory=new_id, primary_key=True)
    platform: Platform = Field(sa_type=Text)
    name: str = Field(max_length=200)
    site_id: UUID | None = None
    """Only this site's conversions; None for every site of the tenant."""
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    """What is not secret: pixel id or code, customer ids, conversion actions per kind, test event code."""
    events: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    """Which conversions go to it: ``lead``, ``purchase``, ``complete_registration`` (booleans), ``custom``
    (the tracked event names)."""
    secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    """JSON of the platform's tokens, sealed by ``tenants.security.secrets``."""
    secret_set_at: datetime | None = timestamp_field(nullable=True, default=None)
    status: IntegrationStatus = Field(default=IntegrationStatus.ACTIVE, sa_type=Text)
    paused_reason: str | None = None
    paused_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
