"""Bodies of the contacts API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from tenants.contacts.service import ContactChanges
from tenants.models import Contact, ContactField

__all__ = ["ContactFieldCreate", "ContactFieldPublic", "ContactPage", "ContactPublic", "ContactWrite", "MergeRequest"]


class ContactFieldCreate(msgspec.Struct, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(max_length=50)]
    label: Annotated[str, msgspec.Meta(max_length=200)]
    type: str = "text"
    sensitive: bool = False


class ContactFieldPublic(msgspec.Struct):
    key: str
    label: str
    type: str
    sensitive: bool

    @classmethod
    def of(cls, field: ContactField) -> ContactFieldPublic:
        return cls(key=field.key, label=field.label, type=field.type, sensitive=field.sensitive)


class ContactWrite(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    first_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    last_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    custom: dict[str, Any] | None = None

    def changes(self) -> ContactChanges:
        return ContactChanges(
            email=self.email, first_name=self.first_name, last_name=self.last_name, phone=self.phone, custom=self.custom
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

    @classmethod
    def of(cls, contact: Contact) -> ContactPublic:
        return cls(**{name: getattr(contact, name) for name in cls.__struct_fields__})


class ContactPage(msgspec.Struct):
    items: list[ContactPublic]
    next_cursor: str | None


class MergeRequest(msgspec.Struct, forbid_unknown_fields=True):
    other_contact_id: UUID
    """This contact is merged into the one in the path and remains only as a record."""
