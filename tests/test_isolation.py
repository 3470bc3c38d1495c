"""PostgreSQL walls each tenant's rows off from every other tenant, whatever the app code does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from tenants.isolation import system_session, tenant_session
from tenants.models.base import new_id
from tenants.outbox import service as outbox
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import store_envelopes
from tenants.tracking.sites import create_site
from tests.conftest import TenantHandle, start_api_server, wait_until
from tests.seeds import APPEND_ONLY, SEEDED_BY_SIGNUP, SEEDERS
from tests.services import APP_ROLE
from workers.app import install_outbox_publisher


@pytest.fixture(autouse=True)
def no_background_relay(owner_url: str) -> Iterator[None]:
    """Seeding enqueues tasks; publishing (and deleting) them mid-test would change the row counts
    compared: no relay after commit here, and the workers' sweep waits while we hold its lock."""
    outbox.set_publisher(None)
    with psycopg.connect(owner_url, autocommit=True) as connection:
        wait_until(
            lambda: connection.execute("SELECT pg_try_advisory_lock(%s)", (outbox.SWEEP_LOCK,)).fetchone() == (True,),
            30,
            "the running outbox sweep to finish",
        )
        yield
    install_outbox_publisher()


def rls_tables(owner_url: str, *, partitions: bool = False) -> dict[str, str]:
    """Every table that holds tenant rows, with the column naming the tenant. Partitions (of
    ``visits``) are reached through their parent unless ``partitions``."""
    with psycopg.connect(owner_url) as connection:
        rows = connection.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
               WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                 AND a.attname = 'tenant_id' AND NOT a.attisdropped AND (%s OR NOT c.relispartition)""",
            (partitions,),
        ).fetchall()
    tables = {name: "tenant_id" for (name,) in rows}
    tables["tenants"] = "id"
    return tables


def test_catalog_every_tenant_table_forces_rls_with_a_policy(owner_url: str) -> None:
    tables = rls_tables(owner_url, partitions=True)
    assert {"tenants", "tenant_users", "api_keys", "outbox", "sites", "visitors", "visits"} <= set(tables)
    assert any(name.startswith("visits_") for name in tables)  # monthly partitions, each walled off too
    with psycopg.connect(owner_url) as connection:
        for table in tables:
            enabled, forced, policies = connection.execute(
                """SELECT c.relrowsecurity, c.relforcerowsecurity,
                          (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
                   FROM pg_class c WHERE c.oid = %s::regclass""",
                (table,),
            ).fetchone()  # type: ignore[misc]
            assert enabled, f"{table}: row-level security not enabled"
            assert forced, f"{table}: row-level security not forced"
            assert policies >= 1, f"{table}: no policy"


def test_catalog_every_tenant_table_has_a_partner_scope(owner_url: str) -> None:
    """A portal transaction sees only what a table's partner scope admits, and nothing of a table without one."""
    with psycopg.connect(owner_url) as connection:
        for table in rls_tables(owner_url):
            scopes = connection.execute(
                "SELECT polpermissive FROM pg_policy WHERE polrelid = %s::regclass AND polname = 'partner_scope'",
                (table,),
            ).fetchall()
            assert scopes == [(False,)], f"{table}: no restrictive partner_scope policy (migrations.tenancy)"


def test_outside_the_portal_the_partner_scope_keeps_the_planners_row_estimates(
    owner_url: str, make_tenant: Callable[..., TenantHandle]
) -> None:
    """The partner scope qualifies every read of every tenant table. When the planner guessed that it kept 0.5 %
    of the rows, every plan was built for a tiny fraction of a tenant's rows, and ingest's visitor update became
    a nested loop over the tenant, ten times slower (migration 0016)."""
    tenant = make_tenant("Kilo")
    with tenant_session(tenant.tenant_id) as session:
        site = create_site(session, name="Estimates", allowed_origins=["https://estimates.example"])
        now = int(time.time() * 1000)
        store_envelopes(
            session,
            [
                Envelope(tenant.tenant_id, site.id, new_id(), now, [Hit(hit_id=uuid4(), ts=now, url="https://e.x/")])
                for _ in range(2000)
            ],
        )
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute("ANALYZE visitors")
    with tenant_session(tenant.tenant_id) as session:
        plan = session.execute(
            text("EXPLAIN (FORMAT JSON) SELECT id FROM visitors WHERE tenant_id = :tenant_id"),
            {"tenant_id": tenant.tenant_id},
        ).scalar_one()
    assert plan[0]["Plan"]["Plan Rows"] > 1000


def test_catalog_app_role_is_powerless(owner_url: str) -> None:
    with psycopg.connect(owner_url) as connection:
        superuser, bypass = connection.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
        ).fetchone()  # type: ignore[misc]
        owned = connection.execute(
            """SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
               WHERE r.rolname = %s""",
            (APP_ROLE,),
        ).fetchone()
    assert superuser is False
    assert bypass is False
    assert owned == (0,)
    with system_session() as session:
        assert session.execute(text("SELECT current_user")).scalar() == APP_ROLE


def test_audit_tables_are_append_only_for_the_app(owner_url: str, make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Juliett")
    seed(tenant.tenant_id)
    for table in APPEND_ONLY:
        for statement in (f"UPDATE {table} SET tenant_id = tenant_id", f"DELETE FROM {table}"):
            with (
                pytest.raises(ProgrammingError, match="permission denied"),
                tenant_session(tenant.tenant_id) as session,
            ):
                session.execute(text(statement))


def test_every_tenant_table_has_a_seeder(owner_url: str) -> None:
    missing = set(rls_tables(owner_url)) - SEEDED_BY_SIGNUP - set(SEEDERS)
    assert not missing, f"add a seeder to tests/seeds.py for {sorted(missing)}"


def seed(tenant_id: UUID) -> None:
    with tenant_session(tenant_id) as session:
        for seeder in set(SEEDERS.values()):
            seeder(session)


def count_as_owner(owner_url: str, table: str, column: str, tenant_id: UUID) -> int:
    with psycopg.connect(owner_url) as connection:
        row = connection.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (tenant_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_cross_tenant_reads_and_writes_fail_in_every_table(
    owner_url: str, make_tenant: Callable[..., TenantHandle]
) -> None:
    a, b = make_tenant("Alpha"), make_tenant("Bravo")
    seed(a.tenant_id)
    seed(b.tenant_id)
    tables = rls_tables(owner_url)
    b_rows_before = {t: count_as_owner(owner_url, t, c, b.tenant_id) for t, c in tables.items()}
    assert all(b_rows_before.values()), b_rows_before

    for table, column in tables.items():
        with tenant_session(a.tenant_id) as session:
            conn = session.connection()
            params = {"b": b.tenant_id, "a": a.tenant_id}
            assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE {column} = :b"), params).scalar() == 0
            visible = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            own = conn.execute(text(f"SELECT count(*) FROM {table} WHERE {column} = :a"), params).scalar()
            assert visible == own > 0, table
            if table not in APPEND_ONLY:
                update = text(f"UPDATE {table} SET {column} = {column} WHERE {column} = :b")
                assert conn.execute(update, params).rowcount == 0
                assert conn.execute(text(f"DELETE FROM {table} WHERE {column} = :b"), params).rowcount == 0
        # Writing a row into B's space fails, whether by insert or by moving one's own row.
        copy = (
            f"INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, "
            f"to_jsonb(x) || jsonb_build_object('{column}', CAST(:b AS text)))).* FROM {table} x LIMIT 1"
        )
        move = f"UPDATE {table} SET {column} = :b WHERE {column} = :a"
        for statement in (copy, move):
            # An append-only table refuses the update before RLS is even asked.
            refusal = "permission denied" if table in APPEND_ONLY and statement is move else "row-level security"
            with pytest.raises(ProgrammingError, match=refusal), tenant_session(a.tenant_id) as session:
                session.execute(text(statement), {"a": a.tenant_id, "b": b.tenant_id})

    assert {t: count_as_owner(owner_url, t, c, b.tenant_id) for t, c in tables.items()} == b_rows_before
    # Reading a partition directly is walled off as well.
    for partition in set(rls_tables(owner_url, partitions=True)) - set(tables):
        with tenant_session(a.tenant_id) as session:
            foreign = session.execute(
                text(f"SELECT count(*) FROM {partition} WHERE tenant_id = :b"), {"b": b.tenant_id}
            )
            assert foreign.scalar() == 0, partition


def test_no_tenant_set_sees_no_rows(owner_url: str, make_tenant: Callable[..., TenantHandle]) -> None:
    seed(make_tenant("Charlie").tenant_id)
    for table in rls_tables(owner_url, partitions=True):
        with system_session() as session:
            assert session.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
            # A transaction after a tenant-scoped one on the same pooled connection sees nothing either.
            session.execute(text("SELECT set_config('app.tenant_id', '', true)"))
            assert session.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table


def test_cross_tenant_through_the_api(client: object, make_tenant: Callable[..., TenantHandle]) -> None:
    from litestar.testing import TestClient

    assert isinstance(client, TestClient)
    a, b = make_tenant("Delta"), make_tenant("Echo")
    b_keys = client.get("/api/v1/api-keys", headers=b.headers).json()
    a_keys = client.get("/api/v1/api-keys", headers=a.headers).json()
    assert {k["id"] for k in a_keys}.isdisjoint({k["id"] for k in b_keys})
    assert client.get("/api/v1/tenant", headers=a.headers).json()["id"] == str(a.tenant_id)
    # A's key cannot revoke B's key: it does not exist in A's world.
    response = client.delete(f"/api/v1/api-keys/{b_keys[0]['id']}", headers=a.headers)
    assert response.status_code == 404
    assert client.get("/api/v1/tenant", headers=b.headers).status_code == 200
    # Pointing A's secret at B's tenant id fails: the key is looked up inside B's rows only.
    forged = f"tm_{b.tenant_id.hex}_{a.api_key.split('_', 2)[2]}"
    assert client.get("/api/v1/tenant", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_pool_of_one_connection_never_leaks_a_tenant_direct(
    services: object, make_tenant: Callable[..., TenantHandle]
) -> None:
    from tenants.accounts.service import list_api_keys
    from tenants.settings import get_settings

    engine = create_engine(get_settings().database_url or "", pool_size=1, max_overflow=0)
    tenants = [make_tenant("Foxtrot"), make_tenant("Golf")]
    leaks = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal leaks
        me = tenants[i % 2]
        with tenant_session(me.tenant_id, engine=engine) as session:
            seen = {k.tenant_id for k in list_api_keys(session)}
        with system_session(engine=engine) as session:
            unscoped = session.execute(text("SELECT count(*) FROM api_keys")).scalar()
        if seen != {me.tenant_id} or unscoped:
            with lock:
                leaks += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(2000)))
    engine.dispose()
    assert leaks == 0


@pytest.mark.slow
def test_pool_of_one_connection_never_leaks_a_tenant_through_the_api(
    make_tenant: Callable[..., TenantHandle],
) -> None:
    tenants = [make_tenant("Hotel"), make_tenant("India")]
    server = start_api_server(TRAILMARK_DATABASE_POOL_SIZE="1")
    try:

        def one(i: int) -> bool:
            me = tenants[i % 2]
            response = httpx.get(f"{server.base_url}/api/v1/tenant", headers=me.headers, timeout=30)
            return response.status_code == 200 and response.json()["id"] == str(me.tenant_id)

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(1000)))
    finally:
        server.stop()
    assert results.count(False) == 0
