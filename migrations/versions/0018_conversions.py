"""Conversions to ad platforms: the tenant's integrations (Meta Conversions API, Google Ads click conversions,
TikTok Events API), each with its settings and its secrets encrypted at rest (``tenants.security.secrets``).

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.tenancy import create_partner_scope, create_tenant_table

revision: str = "0018"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_tenant_table(
        "integrations",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("site_id", UUID(as_uuid=True), nullable=True),
        sa.Column("settings", JSONB(), nullable=False, server_default="{}"),
        sa.Column("events", JSONB(), nullable=False, server_default="{}"),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("secret_set_at", TIMESTAMP, nullable=True),
        sa.Column("status", sa.Text(), nullable=False, server_default="active"),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
        sa.CheckConstraint("platform IN ('meta', 'google_ads', 'tiktok')", name="integrations_platform_check"),
        sa.CheckConstraint("status IN ('active', 'paused')", name="integrations_status_check"),
        # A paused integration always says why (an expired token, a missing connection).
        sa.CheckConstraint("(status = 'paused') = (paused_reason IS NOT NULL)", name="integrations_paused_check"),
    )
    create_partner_scope("integrations")


def downgrade() -> None:
    op.drop_table("integrations")
