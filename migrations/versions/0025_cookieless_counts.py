"""Cookieless counts: visits of browsers that have not (yet) consented on an opt-in site, counted per day from a
daily-rotating salted hash held only in Redis, beside the tracked counts in every traffic rollup table.

They are columns of their own (``cookieless_*``), not added to ``visitors``, ``entries`` …: those equal a scan of
the stored visits (the nightly check compares them), and a cookieless visit is never stored. The rebuild keeps
them (``tenants/reports/rollups.py: rebuild_rollups``), as nothing could derive them again.

``visits.counted_before_consent`` marks the page view the tracker re-sends when such a browser consents: it is
stored (the visitor's first touch) but, counted cookielessly already, adds no page view, visit or visitor.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenants.reports.rollups import COOKIELESS_MEASURES, SHAPES

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # On the partitioned table: every partition, present and future, gets it.
    op.add_column(
        "visits", sa.Column("counted_before_consent", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    # A constant default: PostgreSQL adds such a column without rewriting the table.
    for shape in SHAPES:
        for measure in COOKIELESS_MEASURES:
            op.add_column(shape.traffic_table, sa.Column(measure, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("visits", "counted_before_consent")
    for shape in SHAPES:
        for measure in COOKIELESS_MEASURES:
            op.drop_column(shape.traffic_table, measure)
