"""Membership sites and members, hosted pages with blocks, and tenants' custom domains.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, create_tenant_table

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("tenants", sa.Column("custom_domain", sa.String(253), nullable=True, unique=True))
    # Hosted pages are addressed by the tenant's slug or custom domain: each resolves to the tenant id only.
    for function, column in (("trailmark_slug_tenant", "slug"), ("trailmark_domain_tenant", "custom_domain")):
        op.execute(
            f"""CREATE FUNCTION {function}(key text) RETURNS uuid
                LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
                AS $$ SELECT id FROM tenants WHERE {column} = key $$"""
        )
        op.execute(f"REVOKE ALL ON FUNCTION {function}(text) FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function}(text) TO {APP_GROUP_ROLE}")

    create_tenant_table(
        "membership_sites",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("registration", sa.Text(), nullable=False, server_default="invite"),
        sa.Column("landing_page_slug", sa.String(100), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("registration IN ('open', 'invite')", name="membership_sites_registration_check"),
    )
    create_tenant_table(
        "members",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("membership_site_id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("password_changed_at", TIMESTAMP, nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "membership_site_id"],
            ["membership_sites.tenant_id", "membership_sites.id"],
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("tenant_id", "membership_site_id", "contact_id", name="members_site_contact_key"),
    )
    create_tenant_table(
        "pages",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("meta", JSONB(), nullable=False, server_default="{}"),
        sa.Column("access_level", sa.Text(), nullable=False, server_default="anonymous"),
        sa.Column("membership_site_id", UUID(as_uuid=True), nullable=True),
        sa.Column("redirect_to", sa.Text(), nullable=True),
        sa.Column("blocks", JSONB(), nullable=False, server_default="[]"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("access_level IN ('anonymous', 'identified', 'logged_in')", name="pages_access_level_check"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "membership_site_id"], ["membership_sites.tenant_id", "membership_sites.id"]
        ),
        sa.UniqueConstraint("tenant_id", "slug", name="pages_slug_key"),
    )


def downgrade() -> None:
    op.drop_table("pages")
    op.drop_table("members")
    op.drop_table("membership_sites")
    for function in ("trailmark_slug_tenant", "trailmark_domain_tenant"):
        op.execute(f"DROP FUNCTION {function}(text)")
    op.drop_column("tenants", "custom_domain")
