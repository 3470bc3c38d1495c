"""Rollups that stay fast over long ranges: every key kept under its day and its month (``span``), and the
same counts kept in narrower tables (the acquisition dimensions, the landing page, the referrer, none) so
a report reads the narrowest table that holds what it groups and filters by (see tenants/reports/rollups.py).

The existing rows of ``traffic_rollups`` and ``contact_rollups`` become their day rows; the month rows and
the narrower tables are filled from them, tenant by tenant, so no report changes its numbers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op

from migrations.tenancy import create_tenant_table
from tenants.reports.dimensions import DIMENSIONS
from tenants.reports.rollups import SHAPES, contact_keys_sql, contact_trigger_sql, spread_stored_days_sql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SPAN_CHECK = "span IN ('day', 'block', 'month')"
_ALL_TIME = {"start": date(2000, 1, 1), "end": date(9999, 12, 31)}


def _measures(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in names]


def upgrade() -> None:
    full, *narrower = SHAPES
    for table, key in ((full.traffic_table, full.traffic_key), (full.contact_table, full.contact_key)):
        op.execute(f"ALTER TABLE {table} ADD COLUMN span text NOT NULL DEFAULT 'day' CHECK ({_SPAN_CHECK})")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN span DROP DEFAULT")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (tenant_id, {', '.join(key)})")
    # The primary key now leads with the bucket: it serves reports over all sites and over one.
    op.execute("DROP INDEX traffic_rollups_day_idx")
    for shape in narrower:
        dimensions = [sa.Column(name, sa.Text(), nullable=False) for name in shape.dimensions]
        create_tenant_table(
            shape.traffic_table,
            sa.Column("span", sa.Text(), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("site_id", sa.Uuid(), nullable=False),
            sa.Column("is_bot", sa.Boolean(), nullable=False),
            *dimensions,
            *_measures("pageviews", "events", "entries", "visitors", "new_visitors"),
            sa.CheckConstraint(_SPAN_CHECK, name=f"{shape.traffic_table}_span_check"),
            sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
            primary_key=shape.traffic_key,
        )
        create_tenant_table(
            shape.contact_table,
            sa.Column("span", sa.Text(), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("touch", sa.Text(), nullable=False),
            *[sa.Column(name, sa.Text(), nullable=False) for name in shape.dimensions],
            sa.Column("days_to_contact", sa.Integer(), nullable=False),
            *_measures("contacts"),
            sa.CheckConstraint(_SPAN_CHECK, name=f"{shape.contact_table}_span_check"),
            sa.CheckConstraint("touch IN ('first', 'last')", name=f"{shape.contact_table}_touch_check"),
            primary_key=shape.contact_key,
        )
    op.execute(
        f"""CREATE OR REPLACE FUNCTION trailmark_contact_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               {contact_trigger_sql(SHAPES)};
               RETURN NULL;
           END $$"""
    )
    # Month rows and narrower tables from the day rows already there, under each tenant's own isolation.
    connection = op.get_bind()
    statements = spread_stored_days_sql(SHAPES)
    for (tenant_id,) in connection.execute(sa.text("SELECT trailmark_report_tenants()")).all():
        connection.execute(sa.text("SELECT set_config('app.tenant_id', :id, true)"), {"id": str(tenant_id)})
        for statement in statements:
            connection.execute(sa.text(statement), {"tenant_id": tenant_id, **_ALL_TIME})


def downgrade() -> None:
    full, *narrower = SHAPES
    for shape in narrower:
        op.drop_table(shape.contact_table)
        op.drop_table(shape.traffic_table)
    # Revision 0008's trigger, which reads the old key of contact_rollups (no span).
    key = ", ".join(DIMENSIONS)
    op.execute(
        f"""CREATE OR REPLACE FUNCTION trailmark_contact_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO contact_rollups (tenant_id, day, touch, {key}, days_to_contact, contacts)
               SELECT coalesce(NEW.tenant_id, OLD.tenant_id), day, touch, {key}, days_to_contact, sum(n)
               FROM (SELECT k.*, -1 AS n FROM ({contact_keys_sql("OLD")}) k
                     WHERE TG_OP IN ('UPDATE', 'DELETE') AND OLD.merged_into IS NULL
                     UNION ALL
                     SELECT k.*, 1 FROM ({contact_keys_sql("NEW")}) k
                     WHERE TG_OP IN ('UPDATE', 'INSERT') AND NEW.merged_into IS NULL) AS delta
               GROUP BY day, touch, {key}, days_to_contact HAVING sum(n) <> 0
               ORDER BY day, touch, {key}, days_to_contact
               ON CONFLICT (tenant_id, day, touch, {key}, days_to_contact)
               DO UPDATE SET contacts = contact_rollups.contacts + excluded.contacts;
               RETURN NULL;
           END $$"""
    )
    for table, key_columns in (
        (full.traffic_table, ("site_id", "day", "is_bot", *DIMENSIONS)),
        (full.contact_table, ("day", "touch", *DIMENSIONS, "days_to_contact")),
    ):
        op.execute(f"DELETE FROM {table} WHERE span = 'month'")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")
        op.execute(f"ALTER TABLE {table} DROP COLUMN span")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (tenant_id, {', '.join(key_columns)})")
    op.execute("CREATE INDEX traffic_rollups_day_idx ON traffic_rollups (tenant_id, day)")
