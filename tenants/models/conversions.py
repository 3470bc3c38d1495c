"""Conversions to ad platforms: the tenant's integrations (one ad account or pixel each), and each browser's
ad consent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, ForeignKeyConstraint, LargeBinary, Text
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = [
    "ConsentSource",
    "Conversion",
    "ConversionDelivery",
    "ConversionKind",
    "ConversionRetraction",
    "DeliveryStatus",
    "Integration",
    "IntegrationStatus",
    "Platform",
    "PrivacySignal",
    "RetractionStatus",
    "VisitorConsent",
]


class Platform(StrEnum):
    META = "meta"
    GOOGLE_ADS = "google_ads"
    TIKTOK = "tiktok"
    LINKEDIN = "linkedin"


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
    backoff_until: datetime | None = timestamp_field(nullable=True, default=None)
    """Requests to the platform kept failing (429, 5xx, the network): nothing is sent before this time."""
    consecutive_failures: int = 0
    """Failed requests in a row: the destination's back-off doubles with each, and ends at the first success."""
    last_failure: str | None = None
    """What the platform last answered a failed request (while backed off)."""
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class ConsentSource(StrEnum):
    TRACKER = "tracker"
    """``trailmark('consent', {ads: …})`` in the browser (the site's consent banner)."""
    API = "api"
    """The tenant's server: ``PUT /api/v1/visitors/{id}/consent``."""


class PrivacySignal(StrEnum):
    GPC = "gpc"
    DNT = "dnt"


class VisitorConsent(TenantOwned, table=True):
    """A browser's ad consent: its last choice and when it made it, and a GPC or DNT signal it sent."""

    __tablename__ = "visitor_consents"

    visitor_id: UUID = Field(primary_key=True)
    ads: bool | None = None
    """True: granted; False: refused; None: never answered."""
    source: ConsentSource | None = Field(default=None, sa_type=Text)
    changed_at: datetime | None = timestamp_field(nullable=True, default=None)
    privacy_signal: PrivacySignal | None = Field(default=None, sa_type=Text)
    """The browser sent Global Privacy Control or Do Not Track: no, on every site that honours them."""
    privacy_signal_at: datetime | None = timestamp_field(nullable=True, default=None)
    analytics: bool | None = None
    """Analytics consent: True granted, False refused (the browser is no longer tracked), None never answered."""
    analytics_source: ConsentSource | None = Field(default=None, sa_type=Text)
    analytics_changed_at: datetime | None = timestamp_field(nullable=True, default=None)


class ConversionKind(StrEnum):
    LEAD = "lead"
    """A form submission that created a contact."""
    PURCHASE = "purchase"
    COMPLETE_REGISTRATION = "complete_registration"
    """A membership registration."""
    CUSTOM = "custom"
    """A tracked event the tenant named in an integration."""


class Conversion(TenantOwned, table=True):
    """Something that converted, once per ``source_key`` (the form submission, purchase, member or tracked event).
    ``event_id`` is derived from the tenant and that key: Meta's ``event_id``, Google's ``orderId``."""

    __tablename__ = "conversions"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    kind: ConversionKind = Field(sa_type=Text)
    event_name: str = Field(max_length=100)
    """The kind, or the custom event's name."""
    source_key: str = Field(max_length=100)
    event_id: str = Field(max_length=64)
    contact_id: UUID | None = None
    visitor_id: UUID | None = None
    """The converting browser, when known."""
    site_id: UUID | None = None
    occurred_at: datetime = timestamp_field()
    value: int | None = Field(default=None, sa_type=BigInteger)
    """Minor units of ``currency`` (purchases)."""
    currency: str | None = Field(default=None, max_length=3)
    order_id: str | None = Field(default=None, max_length=255)
    items: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    page_url: str | None = None
    """Where it happened: the converting visit's page."""
    ip: str | None = Field(default=None, sa_column=Column(INET))
    """Of the converting visit, as stored (truncated where the site truncates)."""
    user_agent: str | None = None
    touches: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    """Per platform: the touch whose click ids and cookies it gets (``source``: converting_visit, recent_visit or
    first_touch), absent when no touch carried that platform's ids."""
    created_at: datetime = timestamp_field()


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    """For good: the platform refused it, or it outlived the platform's window (``reason``)."""
    SKIPPED = "skipped"
    """Never sent: no consent, or nothing the platform can match (``reason``)."""


class ConversionDelivery(TenantOwned, table=True):
    """One conversion for one integration: the sender's work item and the status the tenant reads."""

    __tablename__ = "conversion_deliveries"

    integration_id: UUID = Field(primary_key=True)
    conversion_id: UUID = Field(primary_key=True)
    status: DeliveryStatus = Field(default=DeliveryStatus.QUEUED, sa_type=Text)
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: datetime = timestamp_field()
    last_attempt_at: datetime | None = timestamp_field(nullable=True, default=None)
    sent_at: datetime | None = timestamp_field(nullable=True, default=None)
    attempt_id: UUID | None = None
    """The send attempt that claimed it and has not recorded its outcome yet."""
    lease_expires_at: datetime | None = timestamp_field(nullable=True, default=None)
    """Until then the claiming attempt owns it; past it, that sender is presumed dead and it is taken again."""
    conversion_action: str | None = None
    """Google Ads: the conversion action it was uploaded under (a retraction must name that one, whatever the
    integration maps its kind to since)."""
    created_at: datetime = timestamp_field()


class RetractionStatus(StrEnum):
    QUEUED = "queued"
    """Waiting to be sent, or retried (``reason`` says what the platform last answered)."""
    RETRACTED = "retracted"
    FAILED = "failed"
    """For good: the platform refused it, or the conversion outlived its adjustment window (``reason``)."""


class ConversionRetraction(TenantOwned, table=True):
    """One conversion an erased person had sent to a Google Ads integration, to be withdrawn there (a
    RETRACTION adjustment by order id). No personal data: the order id is the conversion's event id, kept only
    until the retraction is done."""

    __tablename__ = "conversion_retractions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "erasure_id"], ["erasures.tenant_id", "erasures.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(
            ["tenant_id", "integration_id"], ["integrations.tenant_id", "integrations.id"], ondelete="CASCADE"
        ),
    )

    id: UUID = Field(default_factory=new_id, primary_key=True)
    erasure_id: UUID
    integration_id: UUID
    conversion_action: str
    """The resource name the conversion was uploaded to (``customers/…/conversionActions/…``)."""
    order_id: str | None = None
    converted_at: datetime = timestamp_field()
    """The conversion's ``conversionDateTime`` at Google: its adjustment windows run from it."""
    adjusted_at: datetime = timestamp_field()
    """The adjustment's own time (the erase's), the same on every attempt."""
    status: RetractionStatus = Field(default=RetractionStatus.QUEUED, sa_type=Text)
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: datetime = timestamp_field()
    last_attempt_at: datetime | None = timestamp_field(nullable=True, default=None)
    retracted_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field()
