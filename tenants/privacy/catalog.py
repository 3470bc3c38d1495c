"""Where a person's rows live, read from the database's own catalog, so a table added later is exported and
erased without anyone remembering to list it.

A column refers to a contact when a foreign key ties it to ``contacts`` or its name says so (``contact_id``,
``…_contact_id``: ``visits`` is partitioned and ``identity_events`` append-only, so not every reference has a
key); to a browser the same way with ``visitors`` and ``visitor_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlmodel import Session

__all__ = ["PersonTable", "person_tables", "text_columns"]


@dataclass(frozen=True)
class PersonTable:
    """A tenant table that can hold rows about a person, and the columns that say whose they are."""

    name: str
    contact_columns: tuple[str, ...] = ()
    visitor_columns: tuple[str, ...] = ()
    references: frozenset[str] = field(default_factory=frozenset)
    """Tables this one has foreign keys to (to delete children before parents)."""


_COLUMNS = text(
    """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
              (SELECT string_agg(DISTINCT f.relname, ',') FROM pg_constraint k JOIN pg_class f ON f.oid = k.confrelid
               WHERE k.conrelid = c.oid AND k.contype = 'f' AND a.attnum = ANY(k.conkey)
                 AND f.relname IN ('contacts', 'visitors'))
       FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
       WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         AND a.attnum > 0 AND NOT a.attisdropped
         AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attname = 'tenant_id')
       ORDER BY c.relname, a.attnum"""
)
_FOREIGN_KEYS = text(
    """SELECT c.relname, f.relname FROM pg_constraint k
       JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class f ON f.oid = k.confrelid
       WHERE k.contype = 'f' AND c.relnamespace = 'public'::regnamespace AND f.relname <> 'tenants'
         AND c.oid <> f.oid"""
)


def _refers_to(column: str, keyed_to: str | None, kind: str) -> bool:
    return kind in (keyed_to or "").split(",") or column == f"{kind[:-1]}_id" or column.endswith(f"_{kind[:-1]}_id")


def person_tables(session: Session) -> list[PersonTable]:
    """Every tenant table with a column naming a contact or a visitor; ``contacts`` and ``visitors`` themselves
    are included (by ``id``)."""
    contact_columns: dict[str, list[str]] = {}
    visitor_columns: dict[str, list[str]] = {}
    for table, column, type_name, keyed_to in session.execute(_COLUMNS):
        if type_name != "uuid" or column == "tenant_id":  # every key leads with the tenant: not a reference
            continue
        if _refers_to(column, keyed_to, "contacts"):
            contact_columns.setdefault(table, []).append(column)
        if _refers_to(column, keyed_to, "visitors"):
            visitor_columns.setdefault(table, []).append(column)
    contact_columns.setdefault("contacts", []).insert(0, "id")
    visitor_columns.setdefault("visitors", []).insert(0, "id")
    references: dict[str, set[str]] = {}
    for table, parent in session.execute(_FOREIGN_KEYS):
        references.setdefault(table, set()).add(parent)
    return [
        PersonTable(
            name,
            tuple(contact_columns.get(name, ())),
            tuple(visitor_columns.get(name, ())),
            frozenset(references.get(name, ())),
        )
        for name in sorted({*contact_columns, *visitor_columns})
    ]


_TEXT_TYPES = ("text", "character varying", "jsonb", "json", "inet", "text[]", "character varying[]")


def text_columns(session: Session) -> dict[str, list[str]]:
    """Every tenant table's columns that can hold words (text, JSON, addresses, text arrays), by table."""
    found: dict[str, list[str]] = {}
    for table, column, type_name, _ in session.execute(_COLUMNS):
        if type_name.split("(")[0] in _TEXT_TYPES or type_name.startswith("character varying"):
            found.setdefault(table, []).append(column)
    return found
