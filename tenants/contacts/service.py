"""Contacts and the tenant's custom contact fields."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import phonenumbers
from sqlalchemy import func, or_, text
from sqlmodel import Session, col, select

from tenants.accounts.service import normalize_email, validate_email
from tenants.errors import Conflict, Invalid
from tenants.isolation import current_tenant_id, get_owned
from tenants.models import Contact, ContactField, FieldType, utcnow

__all__ = [
    "CORE_FIELDS",
    "ContactChanges",
    "ContactPage",
    "create_contact",
    "create_field",
    "delete_field",
    "find_by_email",
    "get_contact",
    "list_contacts",
    "list_fields",
    "sensitive_fields",
    "update_contact",
    "upsert_by_email",
]

CORE_FIELDS = ("email", "first_name", "last_name", "phone")
SENSITIVE_CORE_FIELDS = frozenset({"email", "phone"})
"""Shown on pages only at ``logged_in``, whatever a block says (docs/architecture.md, Identity)."""
FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
MAX_PAGE = 500


@dataclass
class ContactChanges:
    """Values to write; None means "not given". Blank strings never overwrite a stored value."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    custom: dict[str, Any] | None = None


@dataclass(frozen=True)
class ContactPage:
    items: list[Contact]
    next_cursor: str | None


def list_fields(session: Session) -> list[ContactField]:
    return list(session.exec(select(ContactField).order_by(col(ContactField.key))))


def create_field(session: Session, *, key: str, label: str, type: str, sensitive: bool = False) -> ContactField:
    """Define a custom field; ``sensitive`` ones render only for logged-in members."""
    errors: dict[str, str] = {}
    if not FIELD_KEY.match(key) or key in CORE_FIELDS:
        errors["key"] = "must be lowercase letters, digits and _ (start with a letter), not a core field name"
    if not 1 <= len(label.strip()) <= 200:
        errors["label"] = "must be 1 to 200 characters"
    if type not in {t.value for t in FieldType}:
        errors["type"] = f"must be one of {sorted(t.value for t in FieldType)}"
    if errors:
        raise Invalid("the field is invalid", errors)
    if session.get(ContactField, (current_tenant_id(session), key)) is not None:
        raise Conflict(f"the field {key!r} exists")
    field = ContactField(key=key, label=label.strip(), type=FieldType(type), sensitive=sensitive)
    session.add(field)
    session.flush()
    return field


def delete_field(session: Session, key: str) -> None:
    field = get_owned(session, ContactField, key, "field")
    session.delete(field)


def sensitive_fields(session: Session) -> frozenset[str]:
    """Core and custom field names that only a logged-in member may see."""
    custom = session.exec(select(ContactField.key).where(ContactField.sensitive == True)).all()  # noqa: E712
    return SENSITIVE_CORE_FIELDS | {f"custom.{key}" for key in custom}


def normalize_phone(raw: str) -> str:
    """E.164 when parseable (international, or US/Canada by default), else the trimmed input."""
    try:
        number = phonenumbers.parse(raw, None if raw.strip().startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return raw.strip()
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return raw.strip()


def _custom_value(field: ContactField, value: Any) -> tuple[Any, str | None]:  # noqa: PLR0911 - one per type
    """The value in the field's type, or an error message."""
    if value is None or value == "":
        return None, None
    if field.type == FieldType.TEXT:
        text_value = str(value)
        return (text_value, None) if len(text_value) <= 2000 else (None, "must be at most 2000 characters")
    if field.type == FieldType.NUMBER:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None, "must be a number"
        return (int(number) if number.is_integer() else number), None
    if field.type == FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value, None
        lowered = str(value).strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True, None
        if lowered in ("false", "no", "off", "0"):
            return False, None
        return None, "must be true or false"
    try:
        return date.fromisoformat(str(value)).isoformat(), None
    except ValueError:
        return None, "must be a date like 2026-11-26"


def _validated(session: Session, changes: ContactChanges) -> ContactChanges:
    errors: dict[str, str] = {}
    result = ContactChanges()
    if changes.email is not None and changes.email.strip():
        result.email = normalize_email(changes.email)
        errors.update(validate_email(result.email))
    for name in ("first_name", "last_name"):
        value = getattr(changes, name)
        if value is not None and value.strip():
            if len(value.strip()) > 200:
                errors[name] = "must be at most 200 characters"
            setattr(result, name, value.strip())
    if changes.phone is not None and changes.phone.strip():
        if len(changes.phone) > 40:
            errors["phone"] = "must be at most 40 characters"
        result.phone = normalize_phone(changes.phone)
    if changes.custom:
        fields = {f.key: f for f in list_fields(session)}
        custom: dict[str, Any] = {}
        for key, value in changes.custom.items():
            field = fields.get(key)
            if field is None:
                errors[f"custom.{key}"] = "is not a defined contact field"
                continue
            converted, error = _custom_value(field, value)
            if error:
                errors[f"custom.{key}"] = error
            elif converted is not None:
                custom[key] = converted
        result.custom = custom
    if errors:
        raise Invalid("the contact is invalid", errors)
    return result


def _apply(contact: Contact, changes: ContactChanges) -> None:
    for name in ("email", "first_name", "last_name", "phone"):
        value = getattr(changes, name)
        if value is not None:
            setattr(contact, name, value)
    if changes.custom:
        contact.custom = {**contact.custom, **changes.custom}
    contact.updated_at = utcnow()


def find_by_email(session: Session, email: str) -> Contact | None:
    """The live contact with this email, compared case-insensitively."""
    query = select(Contact).where(
        func.lower(Contact.email) == normalize_email(email).lower(), col(Contact.merged_into).is_(None)
    )
    return session.exec(query).first()


def create_contact(session: Session, changes: ContactChanges) -> Contact:
    values = _validated(session, changes)
    if values.email is None:
        raise Invalid("the contact is invalid", {"email": "is required"})
    if find_by_email(session, values.email) is not None:
        raise Conflict(f"a contact with the email {values.email} exists")
    contact = Contact(email=values.email)
    _apply(contact, values)
    session.add(contact)
    session.flush()
    return contact


def upsert_by_email(session: Session, changes: ContactChanges) -> tuple[Contact, bool]:
    """The contact with this email, created if new, updated with the non-blank values given;
    returns ``(contact, created)``. Concurrent upserts of one email end in one contact."""
    values = _validated(session, changes)
    if values.email is None:
        raise Invalid("the contact is invalid", {"email": "is required"})
    # Serialise upserts of one email within the tenant: two simultaneous submissions make one contact.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"{current_tenant_id(session)}:{values.email.lower()}"},
    )
    contact = find_by_email(session, values.email)
    created = contact is None
    if contact is None:
        contact = Contact(email=values.email)
    values.email = None if not created else values.email  # the stored spelling of an email stays
    _apply(contact, values)
    session.add(contact)
    session.flush()
    return contact, created


def get_contact(session: Session, contact_id: UUID) -> Contact:
    return get_owned(session, Contact, contact_id, "contact")


def update_contact(session: Session, contact_id: UUID, changes: ContactChanges) -> Contact:
    contact = get_contact(session, contact_id)
    values = _validated(session, changes)
    if values.email is not None and values.email.lower() != contact.email.lower():
        other = find_by_email(session, values.email)
        if other is not None and other.id != contact.id:
            raise Conflict(f"a contact with the email {values.email} exists")
    _apply(contact, values)
    session.add(contact)
    session.flush()
    return contact


def list_contacts(
    session: Session, *, query: str | None = None, cursor: str | None = None, limit: int = 50
) -> ContactPage:
    """Live contacts, newest first; ``query`` matches the start of the email, first or last name."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit is out of range", {"limit": f"must be 1 to {MAX_PAGE}"})
    statement = (
        select(Contact).where(col(Contact.merged_into).is_(None)).order_by(col(Contact.id).desc()).limit(limit + 1)
    )
    if query:
        prefix = query.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                func.lower(Contact.email).like(prefix),
                func.lower(Contact.first_name).like(prefix),
                func.lower(Contact.last_name).like(prefix),
            )
        )
    if cursor:
        try:
            last_id = UUID(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        except ValueError:
            raise Invalid("the cursor is not one this API returned", {"cursor": "invalid"}) from None
        statement = statement.where(col(Contact.id) < last_id)
    rows = list(session.exec(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = base64.urlsafe_b64encode(str(rows[-1].id).encode()).decode().rstrip("=") if more else None
    return ContactPage(rows, next_cursor)
