"""Stripe events are their own queue: a row with ``processed_at`` NULL is pending, drained in received order.

- A partial index on the pending rows, so a drain finds a tenant's next batch without scanning processed ones.
- ``trailmark_stripe_pending_tenants``: the beat-driven drain must find which tenants have pending events
  without reading any tenant's rows (as ``trailmark_outbox_tenants``): tenant ids only, never payloads.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from migrations.tenancy import APP_GROUP_ROLE

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """CREATE INDEX stripe_events_pending_idx ON stripe_events (tenant_id, received_at, id)
           WHERE processed_at IS NULL"""
    )
    op.execute(
        """CREATE FUNCTION trailmark_stripe_pending_tenants(max_tenants integer)
           RETURNS SETOF uuid LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = public, pg_temp
           AS $$ SELECT DISTINCT tenant_id FROM stripe_events WHERE processed_at IS NULL LIMIT max_tenants $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_stripe_pending_tenants(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_stripe_pending_tenants(integer) TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_stripe_pending_tenants(integer)")
    op.execute("DROP INDEX stripe_events_pending_idx")
