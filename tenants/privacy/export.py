"""A person's data, every row of every table that names them or their browsers, as one JSON document (GDPR
art. 15 and 20): machine-readable, streamed, and complete by construction (the tables come from the catalog)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlmodel import Session

from tenants.privacy.catalog import person_tables
from tenants.privacy.person import QUOTED_BY_ADDRESS, Person, bound, like_patterns, person_statement, quoting_statement

__all__ = ["EXPORT_FORMAT", "NOT_EXPORTED", "export_person"]

EXPORT_FORMAT = "trailmark.person-export.v1"
NOT_EXPORTED = ["tenant_id", "password_hash", "secret_hash", "exchange_code_hash", "signing_secret"]
"""Columns left out: the tenant (the same on every row) and credentials, which are no one's to take away."""
ROWS_PER_FETCH = 500
CHUNK_BYTES = 64 * 1024
"""What is sent to the client at a time."""


def export_person(session: Session, person: Person) -> Iterator[bytes]:
    """The document in chunks: ``{"format", "contact_id", "exported_at", "tables": {table: [row, …]}}``, each
    row as the table holds it (timestamps in ISO 8601 UTC), fetched a few hundred at a time."""
    params = {"contacts": list(person.contact_ids), "visitors": list(person.visitor_ids), "terms": NOT_EXPORTED}
    head = {"format": EXPORT_FORMAT, "contact_id": str(person.contact_id), "exported_at": datetime.now(UTC).isoformat()}
    yield json.dumps(head)[:-1].encode() + b', "tables": {'
    queries = [
        (
            table.name,
            person_statement(
                "SELECT (to_jsonb(t) - CAST(:terms AS text[]))::text FROM",
                table.name,
                table.contact_columns,
                table.visitor_columns,
            ),
        )
        for table in person_tables(session)
    ]
    if person.addresses:  # tables that quote the person by email or phone instead of naming them by id
        queries += [
            (name, quoting_statement("SELECT (to_jsonb(t) - CAST(:terms AS text[]))::text FROM", name))
            for name in sorted(QUOTED_BY_ADDRESS)
        ]
    params["patterns"] = like_patterns(person.addresses)
    for index, (name, sql) in enumerate(queries):
        chunk = [b", " if index else b"", json.dumps(name).encode(), b": ["]
        size = 0
        rows = session.execute(bound(sql), params, execution_options={"yield_per": ROWS_PER_FETCH})
        for number, (row,) in enumerate(rows):
            encoded = row.encode()
            chunk += [b", ", encoded] if number else [encoded]
            size += len(encoded)
            if size >= CHUNK_BYTES:
                yield b"".join(chunk)
                chunk, size = [], 0
        chunk.append(b"]")
        yield b"".join(chunk)
    yield b"}}"
