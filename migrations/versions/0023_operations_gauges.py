"""``trailmark_operations_gauges``: what an operator's ``/metrics`` scrape reads across tenants.

The outbox, queued conversions, paused integrations and pending Stripe events of every tenant, as
aggregates only (counts and ages, per platform where it matters): never a tenant id, never a row. The
app role reaches it as it reaches ``trailmark_outbox_tenants``, so row-level security stays as it is.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from migrations.tenancy import APP_GROUP_ROLE

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Each count reads a partial index (queued deliveries, pending Stripe events) or a small table.
    op.execute(
        """CREATE FUNCTION trailmark_operations_gauges()
           RETURNS TABLE (gauge text, platform text, value double precision)
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$
               SELECT 'outbox_messages', NULL, count(*)::double precision FROM outbox
               UNION ALL
               SELECT 'outbox_oldest_age_seconds', NULL,
                      coalesce(extract(epoch FROM now() - min(created_at)), 0)::double precision FROM outbox
               UNION ALL
               SELECT 'conversions_queued', i.platform, count(*)::double precision
               FROM conversion_deliveries d
               JOIN integrations i ON i.tenant_id = d.tenant_id AND i.id = d.integration_id
               WHERE d.status = 'queued' GROUP BY i.platform
               UNION ALL
               SELECT 'conversions_oldest_queued_age_seconds', i.platform,
                      extract(epoch FROM now() - min(d.created_at))::double precision
               FROM conversion_deliveries d
               JOIN integrations i ON i.tenant_id = d.tenant_id AND i.id = d.integration_id
               WHERE d.status = 'queued' GROUP BY i.platform
               UNION ALL
               SELECT 'integrations_paused', platform, count(*)::double precision
               FROM integrations WHERE status = 'paused' GROUP BY platform
               UNION ALL
               SELECT 'stripe_events_pending', NULL, count(*)::double precision
               FROM stripe_events WHERE processed_at IS NULL
           $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_operations_gauges() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_operations_gauges() TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_operations_gauges()")
