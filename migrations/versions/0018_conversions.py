"""Conversions to ad platforms: the tenant's integrations (Meta Conversions API, Google Ads click conversions,
TikTok Events API), each with its settings and its secrets encrypted at rest (``tenants.security.secrets``);
each browser's ad consent (its choice, when it changed, a GPC or DNT signal it sent) and whether a site needs
consent before anything is sent (``sites.ads_consent``).

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

    op.add_column("sites", sa.Column("ads_consent", sa.Text(), nullable=False, server_default="opt_out"))
    op.create_check_constraint("sites_ads_consent_check", "sites", "ads_consent IN ('opt_out', 'opt_in')")
    # Keyed by visitor id without a foreign key: a GPC browser is never stored as a visitor (collect answers 204),
    # yet its signal must still stop the conversion of the form it submits.
    create_tenant_table(
        "visitor_consents",
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=False),
        sa.Column("ads", sa.Boolean(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("changed_at", TIMESTAMP, nullable=True),
        sa.Column("privacy_signal", sa.Text(), nullable=True),
        sa.Column("privacy_signal_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("source IN ('tracker', 'api')", name="visitor_consents_source_check"),
        sa.CheckConstraint("privacy_signal IN ('gpc', 'dnt')", name="visitor_consents_signal_check"),
        primary_key=("visitor_id",),
    )
    create_partner_scope("visitor_consents")


def downgrade() -> None:
    op.drop_table("visitor_consents")
    op.drop_constraint("sites_ads_consent_check", "sites")
    op.drop_column("sites", "ads_consent")
    op.drop_table("integrations")
