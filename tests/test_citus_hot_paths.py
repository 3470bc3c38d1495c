"""Every statement of the hot paths names its tenant, so on Citus each is routed to the one node holding that
tenant instead of fanning out to every shard (docs/scale.md). Captured from what the services really send."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
from sqlalchemy import event, text

from tenants.identity.service import link_visitor, merge_visitor_history
from tenants.isolation import citus, get_engine, tenant_session
from tenants.models import Evidence
from tenants.models.base import new_id
from tenants.reports.service import ReportQuery, attribution, live, overview
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import ensure_partitions_for, store_envelopes
from tests.conftest import TenantHandle
from tests.support.privacy import build_person

# The tables a statement reads or writes (CTE names are not tables, so they never match a tenant table).
_TABLES = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:ONLY\s+)?([a-z_][a-z0-9_]*)", re.IGNORECASE)


@contextmanager
def statements_sent() -> Iterator[list[str]]:
    """Every SQL statement the process's engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def without_tenant(statements: list[str], tenant_tables: set[str]) -> list[str]:
    """The statements that touch a tenant table but never mention ``tenant_id``."""
    return [
        statement
        for statement in statements
        if set(_TABLES.findall(statement)) & tenant_tables and "tenant_id" not in statement
    ]


def test_the_checker_flags_a_statement_that_does_not_name_its_tenant() -> None:
    assert without_tenant(["SELECT id FROM visitors WHERE id = %(id)s"], {"visitors"}) == [
        "SELECT id FROM visitors WHERE id = %(id)s"
    ]
    assert without_tenant(["SELECT id FROM visitors WHERE tenant_id = %(t)s AND id = %(id)s"], {"visitors"}) == []


def test_ingest_merge_and_reports_name_the_tenant_in_every_statement(
    owner_url: str, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Routed")
    person = build_person(tenant.tenant_id, first_name="Rita", last_name="Routed", devices=1, member=False)
    with tenant_session(tenant.tenant_id) as session:
        site_id = session.execute(
            text("SELECT site_id FROM visitors WHERE id = :id"), {"id": person.visitor_ids[0]}
        ).scalar_one()
    with psycopg.connect(owner_url) as connection:
        tables = set(citus.tenant_tables(connection))
    now = int(time.time() * 1000)
    newcomer = new_id()
    envelopes = [
        Envelope(
            tenant.tenant_id,
            site_id,
            visitor,
            now,
            [
                Hit(hit_id=uuid4(), ts=now + i, url=f"https://routed.example/{i}?utm_source=news", path=f"/{i}")
                for i in range(3)
            ],
        )
        for visitor in (newcomer, person.visitor_ids[0])
    ]
    ensure_partitions_for(envelopes)
    today = datetime.now(UTC).date()

    with statements_sent() as sent:
        with tenant_session(tenant.tenant_id) as session:
            assert store_envelopes(session, envelopes) == 6
        with tenant_session(tenant.tenant_id) as session:
            link_visitor(session, visitor_id=newcomer, contact_id=person.contact_id, evidence=Evidence.FORM)
        with tenant_session(tenant.tenant_id) as session:
            merge_visitor_history(session, newcomer, person.contact_id)
        with tenant_session(tenant.tenant_id) as session:
            q = ReportQuery(start=today - timedelta(days=6), end=today)
            assert overview(session, q).totals is not None
            attribution(session, q)
            assert live(session, site_id).visitors >= 1

    touching = [statement for statement in sent if set(_TABLES.findall(statement)) & tables]
    assert len(touching) > 10  # ingest, merge and the reports all ran and were captured
    missing = without_tenant(sent, tables)
    assert not missing, "\n\n".join(missing)
