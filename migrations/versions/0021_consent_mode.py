"""Analytics consent: each site's ``consent_mode`` (``none``, ``opt_in``, ``opt_out``) and each browser's analytics
answer, kept beside its ad consent in ``visitor_consents`` (one consent store, two purposes).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("sites", sa.Column("consent_mode", sa.Text(), nullable=False, server_default="none"))
    op.create_check_constraint("sites_consent_mode_check", "sites", "consent_mode IN ('none', 'opt_in', 'opt_out')")
    op.add_column("visitor_consents", sa.Column("analytics", sa.Boolean(), nullable=True))
    op.add_column("visitor_consents", sa.Column("analytics_source", sa.Text(), nullable=True))
    op.add_column("visitor_consents", sa.Column("analytics_changed_at", TIMESTAMP, nullable=True))
    op.create_check_constraint(
        "visitor_consents_analytics_source_check", "visitor_consents", "analytics_source IN ('tracker', 'api')"
    )


def downgrade() -> None:
    op.drop_constraint("visitor_consents_analytics_source_check", "visitor_consents")
    op.drop_column("visitor_consents", "analytics_changed_at")
    op.drop_column("visitor_consents", "analytics_source")
    op.drop_column("visitor_consents", "analytics")
    op.drop_constraint("sites_consent_mode_check", "sites")
    op.drop_column("sites", "consent_mode")
