"""Membership sites, their members (contacts with credentials) and hosted pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = ["Member", "MembershipSite", "Page"]


class MembershipSite(TenantOwned, table=True):
    __tablename__ = "membership_sites"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    registration: str = Field(default="invite", sa_type=Text)
    """``open``: anyone may register; ``invite``: the tenant creates members."""
    landing_page_slug: str | None = Field(default=None, max_length=100)
    created_at: datetime = timestamp_field()


class Member(TenantOwned, table=True):
    """A contact who can log in to a membership site. Logging in is the only way to see personal data."""

    __tablename__ = "members"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    membership_site_id: UUID
    contact_id: UUID
    password_hash: str | None = None
    """None until the member sets one through the emailed link."""
    password_changed_at: datetime | None = timestamp_field(nullable=True, default=None)
    disabled: bool = False
    created_at: datetime = timestamp_field()
    last_login_at: datetime | None = timestamp_field(nullable=True, default=None)
    """The start of the member's newest session (None: never logged in since this was recorded)."""


class Page(TenantOwned, table=True):
    """A hosted page: an ordered list of blocks, each shown to some identification levels."""

    __tablename__ = "pages"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    slug: str = Field(max_length=100)
    title: str = Field(max_length=300)
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    access_level: str = Field(default="anonymous", sa_type=Text)
    membership_site_id: UUID | None = None
    redirect_to: str | None = None
    """Where a visitor below ``access_level`` goes (default: the membership site's login, then back)."""
    blocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
