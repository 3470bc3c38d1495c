"""The schema stays ready for Citus (docs/scale.md): the rules of ``tenants.isolation.citus`` hold over the catalog,
and the checker is shown to catch each kind of break on a deliberately bad table."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tenants.isolation import citus


@pytest.fixture
def catalog(owner_url: str) -> Iterator[psycopg.Connection]:
    """An owner connection whose changes are all rolled back."""
    with psycopg.connect(owner_url) as connection:
        yield connection
        connection.rollback()


def test_the_schema_breaks_no_citus_rule(catalog: psycopg.Connection) -> None:
    problems = citus.violations(catalog)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        (
            "CREATE TABLE citus_bad (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants (id))",
            "citus_bad: primary key citus_bad_pkey does not include tenant_id",
        ),
        (
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid,
               code text UNIQUE, PRIMARY KEY (tenant_id, id))""",
            "citus_bad: unique index citus_bad_code_key does not include tenant_id",
        ),
        (
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid, email text,
               PRIMARY KEY (tenant_id, id));
               CREATE UNIQUE INDEX citus_bad_email ON citus_bad (lower(email))""",
            "citus_bad: unique index citus_bad_email does not include tenant_id",
        ),
        (
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid, contact_id uuid,
               PRIMARY KEY (tenant_id, id));
               CREATE UNIQUE INDEX citus_bad_contact ON contacts (id)""",
            "contacts: unique index citus_bad_contact does not include tenant_id",
        ),
        (
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid, user_id uuid,
               PRIMARY KEY (tenant_id, id));
               ALTER TABLE tenant_users ADD CONSTRAINT citus_bad_id UNIQUE (id);
               ALTER TABLE citus_bad ADD CONSTRAINT citus_bad_user
                 FOREIGN KEY (user_id) REFERENCES tenant_users (id)""",
            "citus_bad: foreign key citus_bad_user to tenant_users does not pair tenant_id with tenant_id",
        ),
        (
            # tenant_id paired with the wrong column is as bad as no tenant_id at all.
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid, user_id uuid,
               PRIMARY KEY (tenant_id, id),
               CONSTRAINT citus_bad_user FOREIGN KEY (user_id, tenant_id) REFERENCES tenant_users (tenant_id, id))""",
            "citus_bad: foreign key citus_bad_user to tenant_users does not pair tenant_id with tenant_id",
        ),
        (
            """CREATE TABLE citus_bad (id uuid PRIMARY KEY, owner_tenant uuid, user_id uuid,
               CONSTRAINT citus_bad_user
                 FOREIGN KEY (owner_tenant, user_id) REFERENCES tenant_users (tenant_id, id))""",
            "citus_bad: foreign key citus_bad_user points from a global table into tenant table tenant_users",
        ),
        (
            "CREATE TABLE citus_bad (id uuid PRIMARY KEY, name text)",
            "citus_bad: has no tenant_id and is not a reference table (tenants.isolation.citus.REFERENCE_TABLES)",
        ),
        (
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid,
               PRIMARY KEY (tenant_id, id));
               CREATE POLICY citus_bad_scope ON citus_bad
                 USING (id IN (SELECT contact_id FROM contact_referrers))""",
            "citus_bad: policy citus_bad_scope uses a subquery",
        ),
        (
            """CREATE TABLE citus_bad (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid,
               PRIMARY KEY (tenant_id, id));
               CREATE POLICY citus_bad_scope ON citus_bad
                 WITH CHECK (EXISTS (SELECT FROM tenants t WHERE t.id = citus_bad.tenant_id))""",
            "citus_bad: policy citus_bad_scope uses a subquery",
        ),
    ],
    ids=[
        "primary-key",
        "unique-constraint",
        "unique-expression-index",
        "unique-index-on-existing-table",
        "foreign-key-without-tenant",
        "foreign-key-tenant-mispaired",
        "foreign-key-from-global-table",
        "unlisted-global-table",
        "policy-in-subquery",
        "policy-exists",
    ],
)
def test_the_checker_names_each_broken_rule(catalog: psycopg.Connection, ddl: str, expected: str) -> None:
    for statement in ddl.split(";"):
        catalog.execute(statement)
    assert expected in citus.violations(catalog)


def test_a_global_table_listed_as_reference_passes(catalog: psycopg.Connection) -> None:
    catalog.execute("CREATE TABLE citus_lookup (code text PRIMARY KEY)")
    assert citus.violations(catalog, (*citus.REFERENCE_TABLES, "citus_lookup")) == []


def test_distribution_sql_covers_every_table_after_what_it_references(catalog: psycopg.Connection) -> None:
    script = citus.distribution_sql(catalog)
    statements = script.splitlines()
    distributed = [line.split("'")[1] for line in statements if "create_distributed_table" in line]
    assert sorted(distributed) == citus.tenant_tables(catalog)
    assert distributed[0] == citus.ANCHOR_TABLE
    assert "SELECT create_reference_table('tenants');" in statements
    position = {table: index for index, table in enumerate(distributed)}
    for source, target in catalog.execute(
        """SELECT src.relname, dst.relname FROM pg_constraint f
             JOIN pg_class src ON src.oid = f.conrelid JOIN pg_class dst ON dst.oid = f.confrelid
           WHERE f.contype = 'f' AND src.oid <> dst.oid AND NOT src.relispartition"""
    ).fetchall():
        if source in position and target in position:
            assert position[target] < position[source], f"{source} is distributed before {target}"


def test_the_cli_prints_the_distribution_sql(catalog: psycopg.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    from api.cli import main

    assert main(["citus-sql"]) == 0
    assert capsys.readouterr().out == citus.distribution_sql(catalog)
