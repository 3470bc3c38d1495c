"""Foundation: tenants, tenant users, API keys, the outbox; row-level security on each.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, create_tenant_table, enable_tenant_isolation

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_GROUP_ROLE}') THEN
                CREATE ROLE {APP_GROUP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
        END $$"""
    )
    # The app role may use the schema but never create objects in it: it owns nothing.
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_GROUP_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_GROUP_ROLE}")

    op.create_table(
        "tenants",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # A tenant sees its own row only.
    enable_tenant_isolation("tenants", predicate="id = nullif(current_setting('app.tenant_id', true), '')::uuid")

    create_tenant_table(
        "tenant_users",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('owner', 'admin')", name="tenant_users_role_check"),
    )
    op.execute("CREATE UNIQUE INDEX tenant_users_email_key ON tenant_users (tenant_id, lower(email))")

    create_tenant_table(
        "api_keys",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", ARRAY(sa.Text()), nullable=False),
        sa.Column("created_by", UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["tenant_users.tenant_id", "tenant_users.id"],
            ondelete="SET NULL (created_by)",
        ),
    )

    create_tenant_table(
        "outbox",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("args", JSONB(), nullable=False),
        sa.Column("queue", sa.String(50), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(), nullable=True),
    )
    op.create_index("outbox_created_at_idx", "outbox", ["created_at"])
    # The relay must find which tenants have pending messages without reading any tenant's rows:
    # this owner-run function returns tenant ids only, never message contents.
    op.execute(
        """CREATE FUNCTION trailmark_outbox_tenants(max_tenants integer)
           RETURNS SETOF uuid LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = public, pg_temp
           AS $$ SELECT DISTINCT tenant_id FROM outbox LIMIT max_tenants $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_outbox_tenants(integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_outbox_tenants(integer) TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_outbox_tenants(integer)")
    for table in ("outbox", "api_keys", "tenant_users", "tenants"):
        op.drop_table(table)
