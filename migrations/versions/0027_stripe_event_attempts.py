"""Stripe events that keep failing are set aside: each failed attempt is counted with its error, and after
``tenants.purchases.stripe_webhooks.MAX_ATTEMPTS`` the event is marked processed with a ``failed: …`` outcome
(the tenant sees it in the dashboard's Stripe page), so one poison event never holds back its tenant's others.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("stripe_events", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("stripe_events", sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("stripe_events", "last_error")
    op.drop_column("stripe_events", "attempts")
