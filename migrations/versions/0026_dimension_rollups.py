"""Rollups by dimension: the acquisition dimensions' counts one value at a time (``traffic_dimension_rollups``,
``contact_dimension_rollups``, keyed by ``dimension`` and ``value``), for the overview's unfiltered tables.

``traffic_source_rollups`` holds every combination of channel, source, medium, campaign, partner and click
platform: about 15,000 rows per 90 days at 5M visits, summed three times by every overview. These tables hold one
row per value of each, a few hundred per bucket. Ingest, the contacts trigger and the rebuild keep them with the
other shapes (``tenants/reports/rollups.py: BY_DIMENSION``); the existing counts are spread into them here from
the full tables' day rows, cookieless counts included.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op

from migrations.tenancy import create_partner_scope, create_tenant_table
from tenants.isolation import tenant_binding_sql
from tenants.reports.rollups import (
    BY_DIMENSION,
    COOKIELESS_MEASURES,
    SHAPES,
    TRAFFIC_MEASURES,
    contact_trigger_sql,
    spread_stored_days_sql,
)

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SPAN_CHECK = "span IN ('day', 'block', 'month')"
_ALL_TIME = {"start": date(2000, 1, 1), "end": date(9999, 12, 31)}


def _measures(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in names]


def _dimension_value() -> list[sa.Column]:
    return [sa.Column("dimension", sa.Text(), nullable=False), sa.Column("value", sa.Text(), nullable=False)]


def _trigger(body: str) -> None:
    op.execute(
        f"""CREATE OR REPLACE FUNCTION trailmark_contact_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               {body};
               RETURN NULL;
           END $$"""
    )


def upgrade() -> None:
    shape = BY_DIMENSION
    create_tenant_table(
        shape.traffic_table,
        sa.Column("span", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        *_dimension_value(),
        *_measures(*TRAFFIC_MEASURES, *COOKIELESS_MEASURES),
        sa.CheckConstraint(_SPAN_CHECK, name=f"{shape.traffic_table}_span_check"),
        sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
        primary_key=shape.traffic_key,
    )
    create_tenant_table(
        shape.contact_table,
        sa.Column("span", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("touch", sa.Text(), nullable=False),
        *_dimension_value(),
        sa.Column("days_to_contact", sa.Integer(), nullable=False),
        *_measures("contacts"),
        sa.CheckConstraint(_SPAN_CHECK, name=f"{shape.contact_table}_span_check"),
        sa.CheckConstraint("touch IN ('first', 'last')", name=f"{shape.contact_table}_touch_check"),
        primary_key=shape.contact_key,
    )
    for table in (shape.traffic_table, shape.contact_table):
        create_partner_scope(table)
    _trigger(contact_trigger_sql((*SHAPES, shape)))
    connection = op.get_bind()
    statements = spread_stored_days_sql([shape], (*TRAFFIC_MEASURES, *COOKIELESS_MEASURES))
    for (tenant_id,) in connection.execute(sa.text("SELECT trailmark_report_tenants()")).all():
        connection.exec_driver_sql(tenant_binding_sql(tenant_id))
        for statement in statements:
            connection.execute(sa.text(statement), {"tenant_id": tenant_id, **_ALL_TIME})


def downgrade() -> None:
    _trigger(contact_trigger_sql(SHAPES))
    op.drop_table(BY_DIMENSION.contact_table)
    op.drop_table(BY_DIMENSION.traffic_table)
