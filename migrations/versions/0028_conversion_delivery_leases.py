"""Conversion delivery: claim, send, record with leases; a destination backed off as a whole.

``conversion_deliveries.attempt_id`` / ``lease_expires_at``: the sender claims a batch (a short transaction),
sends it with no transaction open, and records the outcomes on the rows its attempt still holds. A sender
killed in between leaves its rows leased; they are taken again only once the lease has expired.

``conversion_deliveries.conversion_action``: the Google Ads conversion action a conversion was uploaded under,
stored when it is sent, so its retraction names that action even after the tenant maps the kind elsewhere.

``integrations.platform`` may be ``linkedin`` (LinkedIn's Conversions API).

``integrations.backoff_until`` / ``consecutive_failures``: a destination whose requests keep failing (429, 5xx,
the network, the sender raising) waits, as a whole, until ``backoff_until`` (exponential with jitter, at least
the platform's Retry-After); beat's flush leaves it out until then, so the other destinations are not held up
and the failing one is not asked again on every flush.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from migrations.tenancy import APP_GROUP_ROLE

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
DUE_SIGNATURE = "trailmark_due_conversion_destinations(double precision, integer, integer)"


def _due_function(body_filter: str) -> str:
    return f"""CREATE OR REPLACE FUNCTION trailmark_due_conversion_destinations(flush_seconds double precision,
               batch integer, max_rows integer)
           RETURNS TABLE (tenant_id uuid, integration_id uuid)
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$
               SELECT d.tenant_id, d.integration_id
               FROM conversion_deliveries d
               JOIN integrations i ON i.tenant_id = d.tenant_id AND i.id = d.integration_id AND i.status = 'active'
               WHERE d.status = 'queued' AND d.next_attempt_at <= now(){body_filter}
               GROUP BY d.tenant_id, d.integration_id
               HAVING count(*) >= batch OR bool_or(d.attempts > 0)
                   OR min(d.created_at) <= now() - make_interval(secs => flush_seconds)
               ORDER BY min(d.next_attempt_at)
               LIMIT max_rows
           $$"""


def upgrade() -> None:
    op.add_column("conversion_deliveries", sa.Column("attempt_id", UUID(as_uuid=True), nullable=True))
    op.add_column("conversion_deliveries", sa.Column("lease_expires_at", TIMESTAMP, nullable=True))
    op.add_column("conversion_deliveries", sa.Column("conversion_action", sa.Text(), nullable=True))
    op.drop_constraint("integrations_platform_check", "integrations")
    op.create_check_constraint(
        "integrations_platform_check", "integrations", "platform IN ('meta', 'google_ads', 'tiktok', 'linkedin')"
    )
    op.add_column("integrations", sa.Column("backoff_until", TIMESTAMP, nullable=True))
    op.add_column("integrations", sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("integrations", sa.Column("last_failure", sa.Text(), nullable=True))
    op.execute(
        _due_function(
            """
                 AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now())
                 AND (i.backoff_until IS NULL OR i.backoff_until <= now())"""
        )
    )
    op.execute(f"REVOKE ALL ON FUNCTION {DUE_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {DUE_SIGNATURE} TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute(_due_function(""))
    op.drop_column("integrations", "last_failure")
    op.drop_column("integrations", "consecutive_failures")
    op.drop_column("integrations", "backoff_until")
    op.drop_constraint("integrations_platform_check", "integrations")
    op.create_check_constraint(
        "integrations_platform_check", "integrations", "platform IN ('meta', 'google_ads', 'tiktok')"
    )
    op.drop_column("conversion_deliveries", "conversion_action")
    op.drop_column("conversion_deliveries", "lease_expires_at")
    op.drop_column("conversion_deliveries", "attempt_id")
