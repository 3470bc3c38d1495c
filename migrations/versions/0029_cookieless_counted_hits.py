"""Cookieless hits counted, by their random hit id, for two days: the record that makes counting them exactly once.

A cookieless hit's rollup counts are added in an ingest transaction; its Redis decision is marked counted only after
that commits. A worker killed between the two left the hit unmarked, and its re-delivered entry was counted again.
Now the hit ids go in ``cookieless_counted_hits`` in the counting transaction itself, and only hits whose id was not
there yet are counted. A hit id is the tracker's random id of one hit: it names no browser and links no two hits
(the day's hash of the browser stays in Redis only). Retention deletes the rows after two days.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.tenancy import create_partner_scope, create_tenant_table

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_tenant_table(
        "cookieless_counted_hits",
        sa.Column("hit_id", sa.Uuid(), nullable=False),
        sa.Column("counted_on", sa.Date(), nullable=False),
        primary_key=("hit_id",),
    )
    create_partner_scope("cookieless_counted_hits")
    op.create_index("cookieless_counted_hits_day_idx", "cookieless_counted_hits", ["tenant_id", "counted_on"])


def downgrade() -> None:
    op.drop_table("cookieless_counted_hits")
