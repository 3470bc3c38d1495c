"""Sites that carry the tracker, the browsers (visitors) seen on them, and every visit."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column, ForeignKeyConstraint, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB
from sqlmodel import Field, SQLModel

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = ["DEFAULT_PARTNER_PARAMS", "Site", "Visit", "Visitor"]

DEFAULT_PARTNER_PARAMS = ["ref", "orid"]


class Site(TenantOwned, table=True):
    """A website of the tenant that carries the tracker snippet."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("tenant_id", "site_key", name="sites_site_key_key"),)

    id: UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    site_key: str = Field(max_length=32)
    """Public: it appears in the snippet URL. Resolves to the tenant without exposing anything else."""
    allowed_origins: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    honor_dnt: bool = True
    truncate_ip: bool = True
    partner_params: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PARTNER_PARAMS), sa_column=Column(ARRAY(Text), nullable=False)
    )
    bot_policy: str = Field(default="flag", sa_type=Text)
    """``flag``: store bot hits marked and keep them out of attribution; ``drop``: do not store them."""
    ads_consent: str = Field(default="opt_out", sa_type=Text)
    """``opt_out``: conversions go to ad platforms unless the visitor refused; ``opt_in``: only once granted."""
    consent_mode: str = Field(default="none", sa_type=Text)
    """Analytics consent. ``none``: every browser is tracked; ``opt_in``: only once it granted analytics consent
    (before, its hits are only counted cookielessly); ``opt_out``: until it refused."""
    hosted: bool = False
    """The site of the tenant's hosted pages (one per tenant), created with its first page."""
    created_at: datetime = timestamp_field()


class Visitor(TenantOwned, table=True):
    """One browser (one visitor cookie). Its history is its visits; attribution is kept here."""

    __tablename__ = "visitors"
    __table_args__ = (ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"]),)

    id: UUID = Field(primary_key=True)
    site_id: UUID | None = None
    """None for a browser first seen away from the tenant's sites (a tracked-link click)."""
    contact_id: UUID | None = None
    """The person this browser is, as far as the evidence goes (see ``evidence``)."""
    identified_at: datetime | None = timestamp_field(nullable=True, default=None)
    evidence: str | None = None
    """How ``contact_id`` became known: login, form, email_click."""
    logged_in_until: datetime | None = timestamp_field(nullable=True, default=None)
    """Set while the browser holds a live membership session: a link click never re-points it."""
    first_seen_at: datetime = timestamp_field()
    last_seen_at: datetime = timestamp_field()
    first_touch: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    """Landing page, UTMs, click ids, referrer and partner code of the first human visit; set once."""
    first_touch_at: datetime | None = timestamp_field(nullable=True, default=None)
    last_touch: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    """The latest visit that carried campaign data (UTMs, click ids, partner code, external referrer)."""
    last_touch_at: datetime | None = timestamp_field(nullable=True, default=None)
    visit_count: int = 0
    is_bot: bool = False
    created_at: datetime = timestamp_field()


class Visit(SQLModel, table=True):
    """One page view or custom event. Written by ingest only (partitioned by month in SQL)."""

    __tablename__ = "visits"

    tenant_id: UUID = Field(primary_key=True)
    hit_id: UUID = Field(primary_key=True)
    occurred_at: datetime = timestamp_field(primary_key=True)
    received_at: datetime = timestamp_field()
    visitor_id: UUID
    site_id: UUID
    contact_id: UUID | None = None
    type: str = Field(sa_type=Text)
    event_name: str | None = None
    url: str
    path: str
    title: str | None = None
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    utm_id: str | None = None
    click_ids: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    ad_cookies: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    partner_code: str | None = None
    lang: str | None = None
    screen: str | None = None
    props: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    user_agent: str | None = None
    ip: str | None = Field(default=None, sa_column=Column(INET))
    is_bot: bool = False
    bot_reason: str | None = None
    counted_before_consent: bool = False
    """The page view an opt-in site's browser sends on consenting, already counted cookielessly: stored (its
    first touch), but it adds no page view, visit or visitor to the rollups."""
