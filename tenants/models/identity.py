"""People (contacts) and the evidence that ties browsers to them: forms, tracked email links and the
append-only log of identity events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import Column, ForeignKeyConstraint, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = [
    "Contact",
    "ContactField",
    "EmailLink",
    "Evidence",
    "FieldType",
    "Form",
    "FormSubmission",
    "IdentityEvent",
    "LinkClick",
]


class Evidence(StrEnum):
    """Why a browser is believed to be a person, strongest first."""

    LOGIN = "login"
    FORM = "form"
    EMAIL_CLICK = "email_click"

    @property
    def rank(self) -> int:
        return {Evidence.LOGIN: 3, Evidence.FORM: 2, Evidence.EMAIL_CLICK: 1}[self]


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"


class ContactField(TenantOwned, table=True):
    """A tenant-defined contact field. ``sensitive`` ones show on pages only to logged-in members."""

    __tablename__ = "contact_fields"

    key: str = Field(primary_key=True, max_length=50)
    label: str = Field(max_length=200)
    type: FieldType = Field(sa_type=Text)
    sensitive: bool = False
    created_at: datetime = timestamp_field()


class Contact(TenantOwned, table=True):
    """One person. Email is unique per tenant (case-insensitive) among live contacts."""

    __tablename__ = "contacts"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(max_length=320)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    """E.164 when it could be parsed, else as given."""
    custom: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    first_touch: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    """The earliest touch across the contact's browsers; never overwritten once set."""
    first_touch_at: datetime | None = timestamp_field(nullable=True, default=None)
    last_touch: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    last_touch_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    identified_at: datetime | None = timestamp_field(nullable=True, default=None)
    last_seen_at: datetime | None = timestamp_field(nullable=True, default=None)
    merged_into: UUID | None = None
    """Set when the tenant merged this contact into another; it then stays only as a record."""
    erased_at: datetime | None = timestamp_field(nullable=True, default=None)
    """Set when the person was erased: the row stays only as the anonymous buyer of purchases kept by law."""


class Form(TenantOwned, table=True):
    __tablename__ = "forms"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"]),
        UniqueConstraint("tenant_id", "form_key", name="forms_form_key_key"),
    )

    id: UUID = Field(default_factory=new_id, primary_key=True)
    site_id: UUID
    """Its site's allowed origins are the only ones a submission may come from."""
    name: str = Field(max_length=200)
    form_key: str = Field(max_length=32)
    fields: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    """Each: name, label, maps_to (email, first_name, last_name, phone or custom:<key>), type, required."""
    success_redirect: str | None = None
    success_message: str | None = None
    min_fill_seconds: int = 2
    created_at: datetime = timestamp_field()


class FormSubmission(TenantOwned, table=True):
    __tablename__ = "form_submissions"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    form_id: UUID
    contact_id: UUID
    visitor_id: UUID | None = None
    data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    page_url: str | None = None
    idempotency_key: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field()


class EmailLink(TenantOwned, table=True):
    """A tracked link in an email to one contact. A bearer token: it may identify, never log in."""

    __tablename__ = "email_links"
    __table_args__ = (UniqueConstraint("tenant_id", "link_key", name="email_links_link_key_key"),)

    id: UUID = Field(default_factory=new_id, primary_key=True)
    link_key: str = Field(max_length=32)
    contact_id: UUID
    target_url: str
    send_id: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field()


class LinkClick(TenantOwned, table=True):
    __tablename__ = "link_clicks"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    link_id: UUID
    contact_id: UUID
    visitor_id: UUID | None = None
    identifies: bool
    """False for mail scanners (HEAD, known scanners, clicks right after sending)."""
    reason: str | None = None
    user_agent: str | None = None
    exchange_code_hash: str | None = Field(default=None, max_length=64)
    """SHA-256 of the one-time code handed to the tracker on a cross-site target."""
    exchanged_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field()


class IdentityEvent(TenantOwned, table=True):
    """Append-only (the app role may not update or delete): every link, re-point and merge."""

    __tablename__ = "identity_events"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    kind: str
    """linked, repointed, repoint_refused, contacts_merged, history_merged"""
    visitor_id: UUID | None = None
    contact_id: UUID | None = None
    previous_contact_id: UUID | None = None
    evidence: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    created_at: datetime = timestamp_field()
