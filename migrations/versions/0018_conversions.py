"""Conversions to ad platforms: the tenant's integrations (Meta Conversions API, Google Ads click conversions,
TikTok Events API), each with its settings and its secrets encrypted at rest (``tenants.security.secrets``);
each browser's ad consent (its choice, when it changed, a GPC or DNT signal it sent) and whether a site needs
consent before anything is sent (``sites.ads_consent``); the conversions (a lead, a purchase, a registration, a
named custom event), once each per thing that converted, with the touch whose click ids each platform gets; and
one delivery per (integration, conversion), the row the sender works from and the status the tenant reads.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, create_partner_scope, create_tenant_table

revision: str = "0018"
down_revision: str | None = "0017"
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

    create_tenant_table(
        "conversions",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("source_key", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=True),
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("site_id", UUID(as_uuid=True), nullable=True),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("order_id", sa.String(255), nullable=True),
        sa.Column("items", JSONB(), nullable=False, server_default="[]"),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("ip", INET(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("touches", JSONB(), nullable=False, server_default="{}"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"),
        sa.CheckConstraint(
            "kind IN ('lead', 'purchase', 'complete_registration', 'custom')", name="conversions_kind_check"
        ),
        # What converted (a form submission, a purchase, a member, a tracked event) converts once, however
        # often its hook is delivered; the event id is derived from the same key.
        sa.UniqueConstraint("tenant_id", "source_key", name="conversions_source_key"),
        sa.UniqueConstraint("tenant_id", "event_id", name="conversions_event_id_key"),
    )
    op.create_index("conversions_time_idx", "conversions", ["tenant_id", "created_at", "id"])
    # The contact's timeline reads its conversions as a range, newest first.
    op.create_index("conversions_contact_idx", "conversions", ["tenant_id", "contact_id", "occurred_at", "id"])
    create_partner_scope("conversions")

    create_tenant_table(
        "conversion_deliveries",
        sa.Column("integration_id", UUID(as_uuid=True), nullable=False),
        sa.Column("conversion_id", UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "integration_id"], ["integrations.tenant_id", "integrations.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "conversion_id"], ["conversions.tenant_id", "conversions.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("status IN ('queued', 'sent', 'failed', 'skipped')", name="conversion_deliveries_status"),
        sa.CheckConstraint(
            "(status IN ('failed', 'skipped')) <= (reason IS NOT NULL)", name="conversion_deliveries_why"
        ),
        # One delivery per (integration, conversion): the key, not a check in code, keeps a conversion from being
        # queued for a destination twice.
        primary_key=("integration_id", "conversion_id"),
    )
    op.create_index(
        "conversion_deliveries_due_idx",
        "conversion_deliveries",
        ["tenant_id", "integration_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("conversion_deliveries_conversion_idx", "conversion_deliveries", ["tenant_id", "conversion_id"])
    create_partner_scope("conversion_deliveries")
    # Beat's flush asks, across tenants, which destinations have something to send now: a full batch, a
    # conversion that waited flush_seconds, or a retry whose time came. Ids only; paused integrations wait.
    op.execute(
        """CREATE FUNCTION trailmark_due_conversion_destinations(flush_seconds double precision, batch integer,
               max_rows integer)
           RETURNS TABLE (tenant_id uuid, integration_id uuid)
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$
               SELECT d.tenant_id, d.integration_id
               FROM conversion_deliveries d
               JOIN integrations i ON i.tenant_id = d.tenant_id AND i.id = d.integration_id AND i.status = 'active'
               WHERE d.status = 'queued' AND d.next_attempt_at <= now()
               GROUP BY d.tenant_id, d.integration_id
               HAVING count(*) >= batch OR bool_or(d.attempts > 0)
                   OR min(d.created_at) <= now() - make_interval(secs => flush_seconds)
               ORDER BY min(d.next_attempt_at)
               LIMIT max_rows
           $$"""
    )
    op.execute(
        "REVOKE ALL ON FUNCTION trailmark_due_conversion_destinations(double precision, integer, integer) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION trailmark_due_conversion_destinations(double precision, integer, integer)"
        f" TO {APP_GROUP_ROLE}"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_due_conversion_destinations(double precision, integer, integer)")
    op.drop_table("conversion_deliveries")
    op.drop_table("conversions")
    op.drop_table("visitor_consents")
    op.drop_constraint("sites_ads_consent_check", "sites")
    op.drop_column("sites", "ads_consent")
    op.drop_table("integrations")
