"""Retracting an erased person's conversions at Google Ads: ``conversion_retractions``, one row per conversion
Google received for an integration, written by the erase and sent by the conversion sender (a RETRACTION
conversion adjustment by order id), retried like a delivery until it is done or fails for good.

A row holds no personal data: the integration, the conversion action, the order id (the conversion's
deterministic event id, needed to name it at Google and cleared once the retraction is done), when the
conversion was dated at Google and the adjustment's own time. ``trailmark_due_retraction_destinations`` tells
beat's flush, across tenants, which active integrations have a retraction to send now (ids only).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from migrations.tenancy import APP_GROUP_ROLE, create_partner_scope, create_tenant_table

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_tenant_table(
        "conversion_retractions",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("erasure_id", UUID(as_uuid=True), nullable=False),
        sa.Column("integration_id", UUID(as_uuid=True), nullable=False),
        sa.Column("conversion_action", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("converted_at", TIMESTAMP, nullable=False),
        sa.Column("adjusted_at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("retracted_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "erasure_id"], ["erasures.tenant_id", "erasures.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "integration_id"], ["integrations.tenant_id", "integrations.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("status IN ('queued', 'retracted', 'failed')", name="conversion_retractions_status"),
        # A queued retraction knows what to name at Google; a finished one has forgotten it.
        sa.CheckConstraint("(status = 'queued') = (order_id IS NOT NULL)", name="conversion_retractions_order_id"),
        sa.CheckConstraint("(status = 'failed') <= (reason IS NOT NULL)", name="conversion_retractions_why"),
    )
    op.create_index(
        "conversion_retractions_due_idx",
        "conversion_retractions",
        ["tenant_id", "integration_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("conversion_retractions_erasure_idx", "conversion_retractions", ["tenant_id", "erasure_id"])
    create_partner_scope("conversion_retractions")
    op.execute(
        """CREATE FUNCTION trailmark_due_retraction_destinations(max_rows integer)
           RETURNS TABLE (tenant_id uuid, integration_id uuid)
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$
               SELECT r.tenant_id, r.integration_id
               FROM conversion_retractions r
               JOIN integrations i ON i.tenant_id = r.tenant_id AND i.id = r.integration_id AND i.status = 'active'
               WHERE r.status = 'queued' AND r.next_attempt_at <= now()
               GROUP BY r.tenant_id, r.integration_id
               ORDER BY min(r.next_attempt_at)
               LIMIT max_rows
           $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_due_retraction_destinations(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_due_retraction_destinations(integer) TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_due_retraction_destinations(integer)")
    op.drop_table("conversion_retractions")
