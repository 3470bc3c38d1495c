"""Bodies of the contacts API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from api.fields import END, NOT_BLANK, Email
from tenants.contacts.service import CORE_FIELDS, ContactChanges
from tenants.identity.service import Level
from tenants.models import Contact, ContactField, Evidence, FieldType

__all__ = [
    "ContactCreate",
    "ContactFieldCreate",
    "ContactFieldPublic",
    "ContactPage",
    "ContactPublic",
    "ContactUpdate",
    "MergeRequest",
    "Resolution",
    "TimelinePage",
]

FIELD_KEY_NOT_CORE = rf"^(?!(?:{'|'.join(CORE_FIELDS)})$)[a-z][a-z0-9_]{{0,49}}{END}"
"""A custom field's key: lowercase letters, digits and _, starting with a letter, not a core field's name."""

FieldKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=50,
        pattern=FIELD_KEY_NOT_CORE,
        description="Lowercase letters, digits and _, starting with a letter; not email, first_name, last_name, phone",
    ),
]
Name = Annotated[str, msgspec.Meta(max_length=200, description="Blank is ignored")]
Phone = Annotated[str, msgspec.Meta(max_length=40, description="Stored as E.164 when it parses (US/Canada default)")]
CustomValues = Annotated[
    dict[str, str | float | bool | None],  # float takes integers too (one JSON Schema "number", not two that overlap)
    msgspec.Meta(
        description="Values of defined custom fields by key, in the field's type (text, number, boolean, "
        "or an ISO date); blank or null is ignored"
    ),
]


class ContactFieldCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A custom contact field."""

    key: Annotated[FieldKey, msgspec.Meta(description="The field's key in `custom`")]
    label: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="What people see")]
    type: Annotated[FieldType, msgspec.Meta(description="How values are checked and stored")] = FieldType.TEXT
    sensitive: Annotated[bool, msgspec.Meta(description="Shown on pages only to logged-in members")] = False


class ContactFieldPublic(msgspec.Struct):
    key: str
    label: str
    type: FieldType
    sensitive: bool

    @classmethod
    def of(cls, field: ContactField) -> ContactFieldPublic:
        return cls(key=field.key, label=field.label, type=FieldType(field.type), sensitive=field.sensitive)


class ContactCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new contact; the email is its identity (unique per tenant)."""

    email: Email
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Phone | None = None
    custom: CustomValues | None = None

    def changes(self) -> ContactChanges:
        return _changes(self)


class ContactUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted, null and blank values leave the stored ones as they are."""

    email: Email | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Phone | None = None
    custom: CustomValues | None = None

    def changes(self) -> ContactChanges:
        return _changes(self)


def _changes(body: ContactCreate | ContactUpdate) -> ContactChanges:
    return ContactChanges(
        email=body.email, first_name=body.first_name, last_name=body.last_name, phone=body.phone, custom=body.custom
    )


class ContactPublic(msgspec.Struct):
    id: UUID
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    custom: dict[str, Any]
    first_touch: dict[str, Any] | None
    last_touch: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    identified_at: datetime | None
    last_seen_at: datetime | None
    merged_into: UUID | None
    erased_at: Annotated[
        datetime | None,
        msgspec.Meta(description="Set once the person was erased: this record only keeps their purchases, anonymously"),
    ] = None

    @classmethod
    def of(cls, contact: Contact) -> ContactPublic:
        return cls(**{name: getattr(contact, name) for name in cls.__struct_fields__})


class ContactPage(msgspec.Struct):
    items: list[ContactPublic]
    next_cursor: str | None
    """``cursor`` for the older contacts; null on the last page."""
    previous_cursor: str | None = None
    """``before`` for the newer contacts; null on the first page."""


class TimelinePage(msgspec.Struct):
    items: list[dict[str, Any]]
    """Newest first; each has ``at`` and ``kind`` (visit, form_submission, link_click, purchase, conversion with its
    status per ad platform, identity.<event>)."""
    next_cursor: str | None
    """``before`` for the older entries; null when this page reaches the beginning."""


class MergeRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Another contact to merge into the one in the path."""

    other_contact_id: Annotated[
        UUID, msgspec.Meta(description="Merged into the contact in the path; remains only as a record")
    ]


class Resolution(msgspec.Struct):
    level: Level
    visitor_id: UUID | None
    contact_id: UUID | None
    evidence: Evidence | None
    """The strongest evidence that linked the visitor to the contact."""
