"""The schema rules that let Citus shard every tenant table by ``tenant_id`` (docs/scale.md), read from the catalog.

Citus co-locates rows of one tenant on one node only when every key says which tenant a row belongs to:

- every primary key, unique constraint and unique index of a tenant table includes ``tenant_id``;
- every foreign key of a tenant table pairs ``tenant_id`` with ``tenant_id`` of another tenant table, or points
  to a reference table (a copy on every node);
- no row-level-security policy holds a subquery (a policy is evaluated on each shard, which cannot join);
- every table without ``tenant_id`` is a reference-table candidate, listed in :data:`REFERENCE_TABLES`.

:func:`violations` checks them (``tests/test_citus_catalog.py``), :func:`distribution_sql` prints the statements that
distribute the schema (``trailmark citus-sql``).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

__all__ = ["ANCHOR_TABLE", "REFERENCE_TABLES", "distribution_sql", "tenant_tables", "violations"]

REFERENCE_TABLES: tuple[str, ...] = ("tenants",)
"""The tables without ``tenant_id``: global, small, read on every node, so each is a Citus reference table.

``tenants`` is one because its ``slug`` is unique across all tenants (sign-in and hosted pages look a tenant up by
it), which a table sharded by tenant could not enforce. A new global table must be added here (the catalog test
fails until it is)."""

ANCHOR_TABLE = "tenant_users"
"""The first distributed table; every other tenant table is co-located with it (same shards, same nodes)."""

# Schema bookkeeping, not data: Alembic's revision stays a local table on the coordinator.
_NOT_DISTRIBUTED = ("alembic_version",)


def tenant_tables(connection: psycopg.Connection) -> list[str]:
    """Every table (partitioned parents, not their partitions) with a ``tenant_id`` column, by name."""
    rows = connection.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND a.attname = 'tenant_id' AND NOT a.attisdropped
           ORDER BY c.relname"""
    ).fetchall()
    return [name for (name,) in rows]


def violations(connection: psycopg.Connection, reference_tables: Iterable[str] = REFERENCE_TABLES) -> list[str]:
    """Every way the schema breaks a rule of this module, one line each naming the table; empty when ready."""
    reference = set(reference_tables)
    tenant = set(tenant_tables(connection))
    problems: list[str] = []
    problems += _keys_without_tenant(connection, tenant)
    problems += _foreign_keys_across_tenants(connection, tenant, reference)
    problems += _policies_with_subqueries(connection)
    problems += _unlisted_global_tables(connection, tenant, reference)
    return problems


def _keys_without_tenant(connection: psycopg.Connection, tenant: set[str]) -> list[str]:
    rows = connection.execute(
        """SELECT c.relname, i.relname, x.indisprimary,
                  EXISTS (SELECT FROM unnest(x.indkey) k JOIN pg_attribute a
                          ON a.attrelid = c.oid AND a.attnum = k WHERE a.attname = 'tenant_id')
           FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
           WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition AND x.indisunique
           ORDER BY 1, 2"""
    ).fetchall()
    problems = [
        f"{table}: {'primary key' if primary else 'unique index'} {index} does not include tenant_id"
        for table, index, primary, has_tenant in rows
        if table in tenant and not has_tenant
    ]
    with_primary_key = {table for table, _, primary, _ in rows if primary}
    problems += [f"{table}: has no primary key" for table in sorted(tenant - with_primary_key)]
    return problems


def _foreign_keys_across_tenants(connection: psycopg.Connection, tenant: set[str], reference: set[str]) -> list[str]:
    # For each foreign key: the referenced column paired with the referencing tenant_id (NULL when it has none).
    rows = connection.execute(
        """SELECT f.conname, src.relname, dst.relname,
                  (SELECT da.attname FROM unnest(f.conkey, f.confkey) AS k(src_att, dst_att)
                     JOIN pg_attribute sa ON sa.attrelid = f.conrelid AND sa.attnum = k.src_att
                     JOIN pg_attribute da ON da.attrelid = f.confrelid AND da.attnum = k.dst_att
                    WHERE sa.attname = 'tenant_id')
           FROM pg_constraint f JOIN pg_class src ON src.oid = f.conrelid JOIN pg_class dst ON dst.oid = f.confrelid
           WHERE f.contype = 'f' AND src.relnamespace = 'public'::regnamespace AND NOT src.relispartition
             AND f.conparentid = 0
           ORDER BY 2, 1"""
    ).fetchall()
    problems = []
    for name, source, target, paired_with in rows:
        if source in tenant and target in reference:
            continue
        if source in tenant and target in tenant and paired_with == "tenant_id":
            continue
        if source in tenant:
            problems.append(f"{source}: foreign key {name} to {target} does not pair tenant_id with tenant_id")
        elif target in tenant:
            problems.append(f"{source}: foreign key {name} points from a global table into tenant table {target}")
    return problems


def _policies_with_subqueries(connection: psycopg.Connection) -> list[str]:
    # The parsed expression, not its text: a SubLink node is every form of subquery (IN, EXISTS, ANY, scalar).
    rows = connection.execute(
        """SELECT c.relname, p.polname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
           WHERE c.relnamespace = 'public'::regnamespace
             AND (coalesce(p.polqual::text, '') LIKE '%{SUBLINK%'
                  OR coalesce(p.polwithcheck::text, '') LIKE '%{SUBLINK%')
           ORDER BY 1, 2"""
    ).fetchall()
    return [f"{table}: policy {policy} uses a subquery" for table, policy in rows]


def _unlisted_global_tables(connection: psycopg.Connection, tenant: set[str], reference: set[str]) -> list[str]:
    rows = connection.execute(
        """SELECT c.relname FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           ORDER BY 1"""
    ).fetchall()
    tables = {name for (name,) in rows}
    problems = [
        f"{name}: has no tenant_id and is not a reference table (tenants.isolation.citus.REFERENCE_TABLES)"
        for name in sorted(tables - tenant - reference - set(_NOT_DISTRIBUTED))
    ]
    problems += [f"{name}: listed as a reference table but has tenant_id" for name in sorted(reference & tenant)]
    problems += [f"{name}: listed as a reference table but does not exist" for name in sorted(reference - tables)]
    return problems


def _dependency_order(connection: psycopg.Connection, tables: list[str]) -> list[str]:
    """``tables`` with every table after the tables its foreign keys point to (Citus requires it)."""
    rows = connection.execute(
        """SELECT src.relname, dst.relname FROM pg_constraint f
             JOIN pg_class src ON src.oid = f.conrelid JOIN pg_class dst ON dst.oid = f.confrelid
           WHERE f.contype = 'f' AND src.relnamespace = 'public'::regnamespace AND src.oid <> dst.oid"""
    ).fetchall()
    needs: dict[str, set[str]] = {table: set() for table in tables}
    for source, target in rows:
        if source in needs and target in needs:
            needs[source].add(target)
    ordered: list[str] = []
    placed: set[str] = set()
    # The anchor first: every other table names it in colocate_with.
    pending = sorted(tables, key=lambda table: (table != ANCHOR_TABLE, table))
    while pending:
        ready = [table for table in pending if needs[table] <= placed]
        if not ready:
            raise RuntimeError(f"foreign keys form a cycle among {', '.join(pending)}")
        for table in ready:
            ordered.append(table)
            placed.add(table)
        pending = [table for table in pending if table not in placed]
    return ordered


def distribution_sql(connection: psycopg.Connection) -> str:
    """The SQL that turns this schema into a Citus one, run once on the coordinator (docs/scale.md)."""
    tenant = tenant_tables(connection)
    if ANCHOR_TABLE not in tenant:
        raise RuntimeError(f"the anchor table {ANCHOR_TABLE} is missing: run trailmark migrate first")
    lines = ["CREATE EXTENSION IF NOT EXISTS citus;", "BEGIN;"]
    lines += [f"SELECT create_reference_table('{table}');" for table in REFERENCE_TABLES]
    for table in _dependency_order(connection, tenant):
        if table == ANCHOR_TABLE:
            lines.append(f"SELECT create_distributed_table('{table}', 'tenant_id');")
        else:
            lines.append(f"SELECT create_distributed_table('{table}', 'tenant_id', colocate_with => '{ANCHOR_TABLE}');")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"
