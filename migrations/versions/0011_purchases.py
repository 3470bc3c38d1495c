"""Purchases: sales from Stripe or the tenant's server with their refunds and payment references, the
tenant's Stripe webhook (signing secret encrypted at rest) and the events it received, and the daily revenue
rollups kept by a trigger on purchases.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, create_tenant_table
from tenants.reports.dimensions import DIMENSIONS
from tenants.reports.rollups import purchase_keys_sql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
_SOURCES = "source IN ('stripe', 'api')"
_KEY = ", ".join(DIMENSIONS)
_ROLLUP_KEY = f"day, touch, {_KEY}, currency"


def upgrade() -> None:
    create_tenant_table(
        "purchases",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("tax", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("items", JSONB(), nullable=False, server_default="[]"),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("subscription_id", sa.String(255), nullable=True),
        sa.Column("first_touch", JSONB(), nullable=True),
        sa.Column("last_touch", JSONB(), nullable=True),
        sa.Column("new_customer", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"]),
        sa.CheckConstraint(_SOURCES, name="purchases_source_check"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="purchases_currency_check"),
        sa.CheckConstraint("amount >= 0 AND tax >= 0 AND tax <= amount", name="purchases_amount_check"),
        sa.CheckConstraint("refunded_amount BETWEEN 0 AND amount", name="purchases_refunded_check"),
        sa.CheckConstraint(
            "status IN ('paid', 'partially_refunded', 'refunded')"
            " AND (status = 'paid') = (refunded_amount = 0)"
            " AND (status = 'refunded') = (refunded_amount = amount AND amount > 0)",
            name="purchases_status_check",
        ),
        sa.UniqueConstraint("tenant_id", "source", "external_id", name="purchases_external_key"),
    )
    # The contact's purchases (timeline, list filter, totals) by time; the tenant's list by time.
    op.execute("CREATE INDEX purchases_contact_time_idx ON purchases (tenant_id, contact_id, occurred_at, id)")
    op.execute("CREATE INDEX purchases_time_idx ON purchases (tenant_id, occurred_at, id)")

    create_tenant_table(
        "purchase_references",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("purchase_id", UUID(as_uuid=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "purchase_id"], ["purchases.tenant_id", "purchases.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint(_SOURCES, name="purchase_references_source_check"),
        primary_key=("source", "reference"),
    )

    create_tenant_table(
        "purchase_refunds",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("purchase_id", UUID(as_uuid=True), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("payment_ref", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("match_refs", ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "purchase_id"], ["purchases.tenant_id", "purchases.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint(_SOURCES, name="purchase_refunds_source_check"),
        sa.CheckConstraint("amount > 0", name="purchase_refunds_amount_check"),
        # A refund delivered twice is one refund.
        sa.UniqueConstraint("tenant_id", "source", "payment_ref", "external_id", name="purchase_refunds_external_key"),
    )
    op.execute("CREATE INDEX purchase_refunds_purchase_idx ON purchase_refunds (tenant_id, purchase_id)")
    # Refunds that came before their purchase, found by the purchase's references when it lands.
    op.execute(
        "CREATE INDEX purchase_refunds_waiting_idx ON purchase_refunds USING gin (match_refs) WHERE purchase_id IS NULL"
    )

    create_tenant_table(
        "stripe_webhooks",
        sa.Column("endpoint_token", sa.String(64), nullable=False, unique=True),
        sa.Column("signing_secret", sa.LargeBinary(), nullable=True),
        sa.Column("secret_set_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        primary_key=(),
    )
    # The webhook URL's token → its tenant, and nothing else (Stripe calls without an API key).
    op.execute(
        """CREATE FUNCTION trailmark_stripe_endpoint_tenant(key text) RETURNS uuid
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$ SELECT tenant_id FROM stripe_webhooks WHERE endpoint_token = key $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_stripe_endpoint_tenant(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_stripe_endpoint_tenant(text) TO {APP_GROUP_ROLE}")

    create_tenant_table(
        "stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("processed_at", TIMESTAMP, nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
    )

    create_tenant_table(
        "purchase_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("touch", sa.Text(), nullable=False),
        *[sa.Column(name, sa.Text(), nullable=False) for name in DIMENSIONS],
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("purchases", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("revenue", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("new_customers", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("touch IN ('first', 'last')", name="purchase_rollups_touch_check"),
        primary_key=("day", "touch", *DIMENSIONS, "currency"),
    )
    # As contact_rollups: every change of what a purchase counts under (recorded, refunded, deleted) takes
    # its old contribution away and adds the new one in the same transaction, keys upserted in a fixed order
    # so concurrent purchases never deadlock on shared rows.
    op.execute(
        f"""CREATE FUNCTION trailmark_purchase_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO purchase_rollups (tenant_id, {_ROLLUP_KEY}, purchases, revenue, new_customers)
               SELECT coalesce(NEW.tenant_id, OLD.tenant_id), {_ROLLUP_KEY}, sum(n), sum(revenue), sum(customers)
               FROM (SELECT k.*, -1 AS n, -(OLD.amount - OLD.refunded_amount) AS revenue,
                            -(OLD.new_customer::integer) AS customers
                     FROM ({purchase_keys_sql("OLD")}) k WHERE TG_OP IN ('UPDATE', 'DELETE')
                     UNION ALL
                     SELECT k.*, 1, NEW.amount - NEW.refunded_amount, NEW.new_customer::integer
                     FROM ({purchase_keys_sql("NEW")}) k WHERE TG_OP IN ('UPDATE', 'INSERT')) AS delta
               GROUP BY {_ROLLUP_KEY} HAVING sum(n) <> 0 OR sum(revenue) <> 0 OR sum(customers) <> 0
               ORDER BY {_ROLLUP_KEY}
               ON CONFLICT (tenant_id, {_ROLLUP_KEY}) DO UPDATE SET
                   purchases = purchase_rollups.purchases + excluded.purchases,
                   revenue = purchase_rollups.revenue + excluded.revenue,
                   new_customers = purchase_rollups.new_customers + excluded.new_customers;
               RETURN NULL;
           END $$"""
    )
    op.execute(
        """CREATE TRIGGER purchase_rollup AFTER INSERT OR DELETE OR UPDATE OF
               amount, refunded_amount, currency, occurred_at, first_touch, last_touch, new_customer ON purchases
           FOR EACH ROW EXECUTE FUNCTION trailmark_purchase_rollup()"""
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER purchase_rollup ON purchases")
    op.execute("DROP FUNCTION trailmark_purchase_rollup()")
    op.drop_table("purchase_rollups")
    op.drop_table("stripe_events")
    op.execute("DROP FUNCTION trailmark_stripe_endpoint_tenant(text)")
    for table in ("stripe_webhooks", "purchase_refunds", "purchase_references", "purchases"):
        op.drop_table(table)
