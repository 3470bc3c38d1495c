"""Commissions and payouts: the credit each purchase gave (``purchase_credits``), the commissions it earned
(``commissions``) and the payouts that pay them (``payouts``); and the order's own partner fields on
``purchases`` (a promo code typed at checkout, a partner the tenant's call names).

Paying twice is made impossible by keys, not by checks in code: one credit per purchase; one sale or recurring
commission per (purchase, partner, level); one refund adjustment per (purchase, partner, level, refunded total);
one external reference per payout in a tenant. Portal transactions see only their partner's rows.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.tenancy import create_tenant_table

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
PORTAL_PARTNER = "nullif(current_setting('app.partner_id', true), '')"
OUTSIDE_PORTAL = f"{PORTAL_PARTNER} IS NULL"
PARTNER_SCOPES = {
    "purchase_credits": f"partner_id = {PORTAL_PARTNER}::uuid",
    "commissions": f"partner_id = {PORTAL_PARTNER}::uuid",
    "payouts": f"partner_id = {PORTAL_PARTNER}::uuid",
}


def upgrade() -> None:
    op.add_column("purchases", sa.Column("promo_code", sa.String(64), nullable=True))
    op.add_column("purchases", sa.Column("partner_id", UUID(as_uuid=True), nullable=True))
    create_tenant_table(
        "purchase_credits",
        sa.Column("purchase_id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("program_id", UUID(as_uuid=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "purchase_id"], ["purchases.tenant_id", "purchases.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "program_id"], ["programs.tenant_id", "programs.id"], ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('credited', 'held', 'refused')", name="purchase_credits_status_check"),
        sa.CheckConstraint(
            "source IN ('explicit', 'promo_code', 'referral', 'first_referrer', 'last_referrer', 'subscription')",
            name="purchase_credits_source_check",
        ),
        # One credit per purchase: a redelivered or concurrent task finds the credit already made.
        primary_key=("purchase_id",),
    )
    op.create_index("purchase_credits_partner_idx", "purchase_credits", ["tenant_id", "partner_id"])
    create_tenant_table(
        "payouts",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="created"),
        sa.Column("external_reference", sa.String(255), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("paid_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"]),
        sa.CheckConstraint("status IN ('created', 'paid')", name="payouts_status_check"),
        sa.CheckConstraint("amount > 0", name="payouts_amount_check"),
        sa.CheckConstraint(
            "(status = 'paid') = (external_reference IS NOT NULL AND paid_at IS NOT NULL)", name="payouts_paid_check"
        ),
        # A mass-payment run retried with its reference pays nothing twice.
        sa.UniqueConstraint("tenant_id", "external_reference", name="payouts_external_reference_key"),
    )
    op.create_index("payouts_partner_idx", "payouts", ["tenant_id", "partner_id", "created_at"])
    create_tenant_table(
        "commissions",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("purchase_id", UUID(as_uuid=True), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("program_id", UUID(as_uuid=True), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("refund_key", sa.String(64), nullable=False, server_default=""),
        sa.Column("basis", sa.BigInteger(), nullable=False),
        sa.Column("earned_amount", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rates", JSONB(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("payable_at", TIMESTAMP, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payout_id", UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("status_changed_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "purchase_id"], ["purchases.tenant_id", "purchases.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"]),
        sa.ForeignKeyConstraint(["tenant_id", "program_id"], ["programs.tenant_id", "programs.id"]),
        sa.ForeignKeyConstraint(["tenant_id", "payout_id"], ["payouts.tenant_id", "payouts.id"]),
        sa.CheckConstraint("level IN (1, 2)", name="commissions_level_check"),
        sa.CheckConstraint("kind IN ('sale', 'recurring', 'refund_adjustment')", name="commissions_kind_check"),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'paid', 'rejected', 'reversed')", name="commissions_status_check"
        ),
        # Earned lines are never negative; a refund adjustment is never positive (it takes back, on a payout).
        sa.CheckConstraint(
            "CASE WHEN kind = 'refund_adjustment' THEN amount <= 0 AND refund_key <> ''"
            " ELSE amount >= 0 AND amount <= earned_amount AND refund_key = '' END",
            name="commissions_amount_check",
        ),
        # refund_key is '' on earned lines, so this is one sale/recurring line per (purchase, partner, level)
        # and one adjustment per refunded total of the purchase.
        sa.UniqueConstraint(
            "tenant_id", "purchase_id", "partner_id", "level", "kind", "refund_key", name="commissions_once_key"
        ),
    )
    op.create_index("commissions_partner_idx", "commissions", ["tenant_id", "partner_id", "created_at"])
    op.create_index(
        "commissions_due_idx",
        "commissions",
        ["tenant_id", "payable_at"],
        postgresql_where=sa.text("status = 'pending' AND payable_at IS NOT NULL"),
    )
    op.create_index(
        "commissions_unpaid_idx",
        "commissions",
        ["tenant_id", "partner_id"],
        postgresql_where=sa.text("status = 'approved' AND payout_id IS NULL"),
    )
    op.create_index("commissions_payout_idx", "commissions", ["tenant_id", "payout_id"])
    for table, predicate in PARTNER_SCOPES.items():
        op.execute(
            f"CREATE POLICY partner_scope ON {table} AS RESTRICTIVE"
            f" USING ({OUTSIDE_PORTAL} OR {predicate}) WITH CHECK ({OUTSIDE_PORTAL} OR {predicate})"
        )


def downgrade() -> None:
    op.drop_table("commissions")
    op.drop_table("payouts")
    op.drop_table("purchase_credits")
    op.drop_column("purchases", "partner_id")
    op.drop_column("purchases", "promo_code")
