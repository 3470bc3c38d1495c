"""The partner program's foundation: programs and their products, partners and their portal accounts, referral
codes, referral clicks (written by ingest) and the referrers bound to contacts; and the partner scope of the
portal: a transaction that sets ``app.partner_id`` sees only that partner's rows and no other tenant table.

Commissions and payouts attach later to ``partners`` (``tenant_id, id``) and to ``contact_referrers`` (the reason
a credit went where it did).

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import INET, UUID

from migrations.tenancy import create_tenant_table

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

PORTAL_PARTNER = "nullif(current_setting('app.partner_id', true), '')"
"""The partner of a portal transaction (tenants.isolation.partner_session), NULL outside the portal."""
OUTSIDE_PORTAL = f"{PORTAL_PARTNER} IS NULL"

PARTNER_SCOPES = {
    "partners": f"id = {PORTAL_PARTNER}::uuid",
    "partner_accounts": f"partner_id = {PORTAL_PARTNER}::uuid",
    "partner_codes": f"partner_id = {PORTAL_PARTNER}::uuid",
    "referral_clicks": f"partner_id = {PORTAL_PARTNER}::uuid",
    "contact_referrers": f"partner_id = {PORTAL_PARTNER}::uuid",
    # Read through partners / contact_referrers, which the portal scope has already narrowed to one partner.
    "programs": "id IN (SELECT program_id FROM partners)",
    "program_products": "program_id IN (SELECT program_id FROM partners)",
    "contacts": "id IN (SELECT contact_id FROM partners) OR id IN (SELECT contact_id FROM contact_referrers)",
}
"""What a portal transaction may see of each table it needs; every other tenant table shows it nothing."""


def _partner_scope(table: str, predicate: str) -> None:
    # RESTRICTIVE: ANDed with the tenant policy, so the portal narrows the tenant's rows and never widens them.
    op.execute(
        f"CREATE POLICY partner_scope ON {table} AS RESTRICTIVE"
        f" USING ({OUTSIDE_PORTAL} OR {predicate}) WITH CHECK ({OUTSIDE_PORTAL} OR {predicate})"
    )


def upgrade() -> None:
    create_tenant_table(
        "programs",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("landing_url", sa.Text(), nullable=False),
        sa.Column("referrer_rule", sa.Text(), nullable=False, server_default="first"),
        sa.Column("cookie_window_days", sa.Integer(), nullable=False, server_default="30"),
        sa.Column("tiers", sa.SmallInteger(), nullable=False, server_default="1"),
        sa.Column("hold_days", sa.Integer(), nullable=False, server_default="30"),
        sa.Column("minimum_payout", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("recurring_months", sa.Integer(), nullable=True),
        sa.Column("self_referral", sa.Text(), nullable=False, server_default="refuse"),
        sa.Column("shared_referral_fields", sa.Text(), nullable=False, server_default="masked"),
        sa.Column("auto_approve", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("referrer_rule IN ('first', 'last')", name="programs_referrer_rule_check"),
        sa.CheckConstraint("cookie_window_days BETWEEN 1 AND 365", name="programs_cookie_window_check"),
        sa.CheckConstraint("tiers IN (1, 2)", name="programs_tiers_check"),
        sa.CheckConstraint("hold_days BETWEEN 0 AND 365", name="programs_hold_days_check"),
        sa.CheckConstraint("minimum_payout >= 0", name="programs_minimum_payout_check"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="programs_currency_check"),
        sa.CheckConstraint("recurring_months IS NULL OR recurring_months >= 0", name="programs_recurring_check"),
        sa.CheckConstraint("self_referral IN ('refuse', 'hold')", name="programs_self_referral_check"),
        sa.CheckConstraint(
            "shared_referral_fields IN ('none', 'masked', 'full')", name="programs_shared_referral_fields_check"
        ),
    )
    create_tenant_table(
        "program_products",
        sa.Column("program_id", UUID(as_uuid=True), nullable=False),
        sa.Column("product", sa.String(200), nullable=False),
        sa.Column("level1_kind", sa.Text(), nullable=False),
        sa.Column("level1_value", sa.BigInteger(), nullable=False),
        sa.Column("level2_kind", sa.Text(), nullable=True),
        sa.Column("level2_value", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "program_id"], ["programs.tenant_id", "programs.id"], ondelete="CASCADE"),
        sa.CheckConstraint("level1_kind IN ('percent', 'flat')", name="program_products_level1_kind_check"),
        sa.CheckConstraint(
            "(level2_kind IS NULL) = (level2_value IS NULL)"
            " AND (level2_kind IS NULL OR level2_kind IN ('percent', 'flat'))",
            name="program_products_level2_check",
        ),
        sa.CheckConstraint(
            "level1_value >= 0 AND (level1_kind = 'flat' OR level1_value <= 10000)"
            " AND (level2_value IS NULL OR level2_value >= 0 AND (level2_kind = 'flat' OR level2_value <= 10000))",
            name="program_products_value_check",
        ),
        primary_key=("program_id", "product"),
    )
    create_tenant_table(
        "partners",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("program_id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="applied"),
        sa.Column("parent_partner_id", UUID(as_uuid=True), nullable=True),
        sa.Column("payout_email", sa.String(320), nullable=True),
        sa.Column("status_changed_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "program_id"], ["programs.tenant_id", "programs.id"]),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"]),
        sa.ForeignKeyConstraint(["tenant_id", "parent_partner_id"], ["partners.tenant_id", "partners.id"]),
        sa.CheckConstraint("status IN ('applied', 'approved', 'rejected', 'suspended')", name="partners_status_check"),
        sa.CheckConstraint("parent_partner_id IS DISTINCT FROM id", name="partners_parent_check"),
        # One partnership per person and tenant: the portal login (an email) names one partner.
        sa.UniqueConstraint("tenant_id", "contact_id", name="partners_contact_key"),
    )
    op.create_index("partners_parent_idx", "partners", ["tenant_id", "parent_partner_id"])
    create_tenant_table(
        "partner_accounts",
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("password_changed_at", TIMESTAMP, nullable=True),
        sa.Column("email_verified_at", TIMESTAMP, nullable=True),
        sa.Column("last_login_ip", INET(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"], ondelete="CASCADE"),
        sa.CheckConstraint("password_hash IS NULL OR email_verified_at IS NOT NULL", name="partner_accounts_verified"),
        primary_key=("partner_id",),
    )
    create_tenant_table(
        "partner_codes",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"], ondelete="CASCADE"),
        sa.CheckConstraint("code ~ '^[a-z0-9-]{2,64}$'", name="partner_codes_code_check"),
        sa.CheckConstraint("kind IN ('link', 'promo')", name="partner_codes_kind_check"),
        sa.UniqueConstraint("tenant_id", "code", name="partner_codes_code_key"),
    )
    op.create_index("partner_codes_partner_idx", "partner_codes", ["tenant_id", "partner_id"])
    create_tenant_table(
        "referral_clicks",
        sa.Column("hit_id", UUID(as_uuid=True), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("program_id", UUID(as_uuid=True), nullable=False),
        sa.Column("code_id", UUID(as_uuid=True), nullable=False),
        sa.Column("sid", sa.String(100), nullable=True),
        sa.Column("ip", INET(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "visitor_id"], ["visitors.tenant_id", "visitors.id"], ondelete="CASCADE"),
        # The hit id is the browser's: a replayed hit is the same click.
        primary_key=("hit_id",),
    )
    op.create_index("referral_clicks_visitor_idx", "referral_clicks", ["tenant_id", "visitor_id", "occurred_at"])
    op.create_index("referral_clicks_partner_idx", "referral_clicks", ["tenant_id", "partner_id", "occurred_at"])
    create_tenant_table(
        "contact_referrers",
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("program_id", UUID(as_uuid=True), nullable=False),
        sa.Column("position", sa.Text(), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("click_hit_id", UUID(as_uuid=True), nullable=True),
        sa.Column("clicked_at", TIMESTAMP, nullable=True),
        sa.Column("bound_at", TIMESTAMP, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "program_id"], ["programs.tenant_id", "programs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "partner_id"], ["partners.tenant_id", "partners.id"], ondelete="CASCADE"),
        sa.CheckConstraint("position IN ('first', 'last')", name="contact_referrers_position_check"),
        # One first and one last referrer per contact and program: a primary-key read at purchase time.
        primary_key=("contact_id", "program_id", "position"),
    )
    op.create_index("contact_referrers_partner_idx", "contact_referrers", ["tenant_id", "partner_id", "bound_at"])

    for table, predicate in PARTNER_SCOPES.items():
        _partner_scope(table, predicate)
    # Fail closed: every other tenant table (and its partitions) shows a portal transaction nothing.
    op.execute(
        f"""DO $$
            DECLARE t text;
            BEGIN
                FOR t IN SELECT c.relname FROM pg_class c
                         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                           AND c.relrowsecurity
                           AND c.relname <> ALL (ARRAY[{", ".join(f"'{t}'" for t in PARTNER_SCOPES)}])
                           AND NOT EXISTS (SELECT 1 FROM pg_policy p
                                           WHERE p.polrelid = c.oid AND p.polname = 'partner_scope')
                LOOP
                    EXECUTE format('CREATE POLICY partner_scope ON %I AS RESTRICTIVE USING (%s) WITH CHECK (%s)',
                                   t, {_literal(OUTSIDE_PORTAL)}, {_literal(OUTSIDE_PORTAL)});
                END LOOP;
            END $$"""
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    op.execute(
        """DO $$
            DECLARE t text;
            BEGIN
                FOR t IN SELECT c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                         WHERE p.polname = 'partner_scope'
                LOOP
                    EXECUTE format('DROP POLICY partner_scope ON %I', t);
                END LOOP;
            END $$"""
    )
    for table in ("contact_referrers", "referral_clicks", "partner_codes", "partner_accounts", "partners"):
        op.drop_table(table)
    op.drop_table("program_products")
    op.drop_table("programs")
