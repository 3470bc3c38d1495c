"""Contacts and the tenant's custom contact fields."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as default
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import phonenumbers
from sqlalchemy import exists, func, literal_column, or_, text, tuple_
from sqlalchemy.sql.elements import Label
from sqlmodel import Session, col, select

from tenants.accounts.service import normalize_email, validate_email
from tenants.errors import Conflict, Invalid
from tenants.isolation import current_tenant_id, get_owned
from tenants.models import Contact, ContactField, Evidence, FieldType, Visitor, utcnow
from tenants.reports.dimensions import touch_dimension_sql
from tenants.tracking.segments import TOUCHES, TouchFilter, touch_conditions

__all__ = [
    "CORE_FIELDS",
    "ContactChanges",
    "ContactFilter",
    "ContactPage",
    "count_contacts",
    "create_contact",
    "create_field",
    "delete_field",
    "emails_of",
    "export_contacts",
    "find_by_email",
    "get_contact",
    "list_contacts",
    "list_fields",
    "sensitive_fields",
    "staff_masked_fields",
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
    """Goes on to older contacts; None on the last page."""
    previous_cursor: str | None = None
    """Goes back to newer contacts (as ``before``); None on the first page."""


@dataclass(frozen=True)
class ContactFilter:
    """Which live contacts a list shows (every part optional; all given parts must hold)."""

    query: str | None = None
    """Start of the email, first or last name."""
    touch: TouchFilter = default(default_factory=TouchFilter)
    evidence: str | None = None
    """Only contacts with a device identified by this evidence (login, form, email_click)."""
    fields: dict[str, str] = default(default_factory=dict)
    """Custom field key → the value it equals (given as text, read in the field's type)."""
    created_from: date | None = None
    created_to: date | None = None
    """Created on or before this UTC day (inclusive)."""


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


def emails_of(session: Session, contact_ids: Iterable[UUID]) -> dict[UUID, str]:
    """The emails of these contacts in one query (a page of partners or purchases names its people by them)."""
    wanted = list(set(contact_ids))
    if not wanted:
        return {}
    return dict(session.execute(select(col(Contact.id), col(Contact.email)).where(col(Contact.id).in_(wanted))).all())


def update_contact(session: Session, contact_id: UUID, changes: ContactChanges) -> Contact:
    contact = get_contact(session, contact_id)
    if contact.erased_at is not None:  # the anonymous record of purchases must not become a person again
        raise Conflict("this contact was erased; it only keeps purchases, anonymously")
    values = _validated(session, changes)
    if values.email is not None and values.email.lower() != contact.email.lower():
        other = find_by_email(session, values.email)
        if other is not None and other.id != contact.id:
            raise Conflict(f"a contact with the email {values.email} exists")
    _apply(contact, values)
    session.add(contact)
    session.flush()
    return contact


def _list_cursor(contact: Contact) -> str:
    return base64.urlsafe_b64encode(f"{contact.created_at.isoformat()}|{contact.id}".encode()).decode().rstrip("=")


def _read_list_cursor(cursor: str, name: str) -> tuple[datetime, UUID]:
    try:
        at, contact_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        return datetime.fromisoformat(at), UUID(contact_id)
    except ValueError:
        raise Invalid("the cursor is not one this API returned", {name: "invalid"}) from None


def _prefix_pattern(query: str) -> str:
    return query.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _custom_condition(fields: dict[str, ContactField], key: str, raw: str) -> Any:
    field = fields.get(key)
    if field is None:
        raise Invalid("the filter names an unknown field", {f"field.{key}": "is not a defined contact field"})
    value, error = _custom_value(field, raw)
    if error or value is None:
        raise Invalid("the filter value is invalid", {f"field.{key}": error or "must not be blank"})
    return col(Contact.custom).contains({key: value})


def _list_conditions(session: Session, filters: ContactFilter) -> list[Any]:
    conditions: list[Any] = [col(Contact.merged_into).is_(None)]
    if filters.query and filters.query.strip():
        prefix = _prefix_pattern(filters.query)
        conditions.append(
            or_(
                func.lower(Contact.email).like(prefix),
                func.lower(Contact.first_name).like(prefix),
                func.lower(Contact.last_name).like(prefix),
            )
        )
    conditions.extend(touch_conditions(filters.touch, table="contacts"))
    if filters.evidence is not None:
        if filters.evidence not in {e.value for e in Evidence}:
            raise Invalid("the evidence is unknown", {"evidence": f"must be one of {[e.value for e in Evidence]}"})
        conditions.append(
            exists().where(
                col(Visitor.tenant_id) == col(Contact.tenant_id),
                col(Visitor.contact_id) == col(Contact.id),
                col(Visitor.evidence) == filters.evidence,
            )
        )
    if filters.fields:
        defined = {f.key: f for f in list_fields(session)}
        conditions.extend(_custom_condition(defined, key, raw) for key, raw in filters.fields.items())
    if filters.created_from is not None:
        conditions.append(col(Contact.created_at) >= _utc_midnight(filters.created_from))
    if filters.created_to is not None:
        conditions.append(col(Contact.created_at) < _utc_midnight(filters.created_to + timedelta(days=1)))
    if filters.created_from and filters.created_to and filters.created_from > filters.created_to:
        raise Invalid("the date range is empty", {"created_to": "must not be before created_from"})
    return conditions


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def list_contacts(
    session: Session,
    filters: ContactFilter | None = None,
    *,
    cursor: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> ContactPage:
    """Live contacts matching ``filters``, newest first, one keyset page at a time: ``cursor`` (a page's
    ``next_cursor``) goes on to older contacts, ``before`` (a page's ``previous_cursor``) back to newer ones."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit is out of range", {"limit": f"must be 1 to {MAX_PAGE}"})
    if cursor and before:
        raise Invalid("give a cursor or before, not both", {"before": "must not be given with cursor"})
    statement = select(Contact).where(*_list_conditions(session, filters or ContactFilter())).limit(limit + 1)
    key = tuple_(col(Contact.created_at), col(Contact.id))
    if before:
        statement = statement.where(key > tuple_(*_read_list_cursor(before, "before")))
        statement = statement.order_by(col(Contact.created_at), col(Contact.id))
    else:
        if cursor:
            statement = statement.where(key < tuple_(*_read_list_cursor(cursor, "cursor")))
        statement = statement.order_by(col(Contact.created_at).desc(), col(Contact.id).desc())
    rows = list(session.exec(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    if before:
        rows.reverse()
        newer, older = more, True
    else:
        newer, older = cursor is not None, more
    return ContactPage(
        rows,
        next_cursor=_list_cursor(rows[-1]) if rows and older else None,
        previous_cursor=_list_cursor(rows[0]) if rows and newer else None,
    )


def count_contacts(session: Session, filters: ContactFilter | None = None) -> int:
    """How many live contacts match ``filters`` (the number a list of them pages through)."""
    statement = select(func.count()).select_from(Contact).where(*_list_conditions(session, filters or ContactFilter()))
    return int(session.exec(statement).one())


def staff_masked_fields(session: Session) -> frozenset[str]:
    """Fields the dashboard masks unless a role that may see them reveals or exports them: the phone and the
    sensitive custom fields. The email stays visible: it is how staff find, tell apart and merge contacts."""
    return sensitive_fields(session) - {"email"}


EXPORT_BATCH = 1000
"""Rows fetched per round trip of the export's server-side cursor: memory stays flat for any size."""


def export_contacts(
    session: Session, filters: ContactFilter | None = None, *, include_sensitive: bool
) -> tuple[list[str], Iterator[list[str]]]:
    """The header and rows of a CSV export of the filtered list (newest first), streamed from one server-side
    cursor; masked fields (see :func:`staff_masked_fields`) only with ``include_sensitive``."""
    masked = staff_masked_fields(session)
    custom_keys = [f.key for f in list_fields(session) if include_sensitive or f"custom.{f.key}" not in masked]
    core = [name for name in ("email", "first_name", "last_name", "phone") if include_sensitive or name not in masked]
    touch_columns: list[Label[Any]] = [
        literal_column(expression).label(f"{touch}_{name}")
        for touch in TOUCHES
        for name, expression in touch_dimension_sql(f"contacts.{touch}_touch").items()
    ]
    header = ["id", *core, *custom_keys, "created_at", "identified_at", "last_seen_at"]
    header += [str(column.name) for column in touch_columns]
    statement = (
        select(Contact, *touch_columns)
        .where(*_list_conditions(session, filters or ContactFilter()))
        .order_by(col(Contact.created_at).desc(), col(Contact.id).desc())
        .execution_options(yield_per=EXPORT_BATCH)
    )

    def rows() -> Iterator[list[str]]:
        for contact, *dimensions in session.execute(statement):
            yield [
                str(contact.id),
                *(getattr(contact, name) or "" for name in core),
                *(_cell(contact.custom.get(key)) for key in custom_keys),
                contact.created_at.isoformat(),
                contact.identified_at.isoformat() if contact.identified_at else "",
                contact.last_seen_at.isoformat() if contact.last_seen_at else "",
                *(value or "" for value in dimensions),
            ]

    return header, rows()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
