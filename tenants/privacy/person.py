"""Who a person is across the tables: their contact (and the contacts merged into it) and their browsers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, col, select

from tenants.isolation import get_owned
from tenants.models import Contact, Visitor

__all__ = [
    "QUOTED_BY_ADDRESS",
    "Person",
    "bound",
    "find_person",
    "like_patterns",
    "person_statement",
    "quoting_statement",
    "rows_of",
]


@dataclass(frozen=True)
class Person:
    contact_id: UUID
    contact_ids: tuple[UUID, ...]
    """The contact and every contact merged into it (each merged one still holds that person's old fields)."""
    visitor_ids: tuple[UUID, ...]
    """The browsers linked to any of those contacts now. A browser re-pointed to someone else is theirs; what
    it did before still names this person's contact, and is found by that."""
    addresses: tuple[str, ...] = ()
    """The person's email addresses and phone numbers (lower case): what tables that quote people rather than
    name them by id (:data:`QUOTED_BY_ADDRESS`) are searched for."""


def find_person(session: Session, contact_id: UUID) -> Person:
    """The person of a contact (NotFound when the tenant has no such contact)."""
    get_owned(session, Contact, contact_id, "contact")
    contact_ids = [contact_id]
    frontier = [contact_id]
    while frontier:  # merges can chain: B into A, then A into C
        frontier = list(session.exec(select(Contact.id).where(col(Contact.merged_into).in_(frontier))))
        contact_ids += [c for c in frontier if c not in contact_ids]
    visitors = session.exec(
        select(Visitor.id).where(col(Visitor.contact_id).in_(contact_ids)).order_by(col(Visitor.id))
    )
    contacts = session.exec(select(Contact).where(col(Contact.id).in_(contact_ids)))
    addresses = sorted({a.strip().lower() for c in contacts for a in (c.email, c.phone) if a and a.strip()})
    return Person(contact_id, tuple(contact_ids), tuple(visitors), tuple(addresses))


QUOTED_BY_ADDRESS = {"stripe_events": "payload"}
"""Tables that hold people's details without a contact id (Stripe's events quote the buyer), and the column."""


def like_patterns(needles: tuple[str, ...] | list[str]) -> list[str]:
    """``LIKE`` patterns that find each needle anywhere, its wildcard characters taken literally."""
    return ["%" + n.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for n in needles]


def quoting_statement(head: str, table: str) -> str:
    """``head`` over the rows of a :data:`QUOTED_BY_ADDRESS` table that quote one of ``:patterns``."""
    return f'{head} "{table}" t WHERE lower("{QUOTED_BY_ADDRESS[table]}"::text) LIKE ANY(:patterns)'


def rows_of(contact_columns: tuple[str, ...], visitor_columns: tuple[str, ...]) -> str:
    """The SQL condition that a row names the person (``:contacts``, ``:visitors`` bound as uuid arrays)."""
    tests = [f'"{c}" = ANY(:contacts)' for c in contact_columns] + [f'"{v}" = ANY(:visitors)' for v in visitor_columns]
    return " OR ".join(tests) or "false"


def person_statement(
    head: str,
    table: str,
    contact_columns: tuple[str, ...],
    visitor_columns: tuple[str, ...],
    *,
    claimed_by_no_contact: tuple[str, ...] = (),
) -> str:
    """``head`` (``SELECT … FROM``, ``DELETE FROM``) over the rows of ``table`` (aliased ``t``) naming the person;
    with ``claimed_by_no_contact``, only rows whose those columns are empty. Table and column names come from
    the catalog, never from input."""
    unclaimed = "".join(f' AND "{c}" IS NULL' for c in claimed_by_no_contact)
    return f'{head} "{table}" t WHERE ({rows_of(contact_columns, visitor_columns)}){unclaimed}'


_ARRAYS: dict[str, TypeEngine[Any]] = {
    "contacts": ARRAY(PG_UUID(as_uuid=True)),
    "visitors": ARRAY(PG_UUID(as_uuid=True)),
    "terms": ARRAY(Text),
    "patterns": ARRAY(Text),
}


def bound(sql: str) -> TextClause:
    """``sql`` with its ``:contacts`` and ``:visitors`` (uuid arrays), ``:terms`` and ``:patterns`` (text arrays)
    typed."""
    statement = text(sql)
    return statement.bindparams(*(bindparam(n, type_=t) for n, t in _ARRAYS.items() if f":{n}" in sql))
