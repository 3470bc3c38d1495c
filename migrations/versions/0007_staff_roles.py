"""Staff of the dashboard: the roles owner, admin, editor, viewer, and the append-only audit log of their actions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.tenancy import create_tenant_table

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE tenant_users DROP CONSTRAINT tenant_users_role_check")
    op.execute(
        "ALTER TABLE tenant_users ADD CONSTRAINT tenant_users_role_check"
        " CHECK (role IN ('owner', 'admin', 'editor', 'viewer'))"
    )
    create_tenant_table(
        "audit_log",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("actor_email", sa.String(320), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("detail", JSONB(), nullable=False),
        append_only=True,
    )
    # The owner reads it newest first, page by page.
    op.create_index("audit_log_at", "audit_log", ["tenant_id", sa.text("at DESC"), "id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.execute("ALTER TABLE tenant_users DROP CONSTRAINT tenant_users_role_check")
    op.execute("ALTER TABLE tenant_users ADD CONSTRAINT tenant_users_role_check CHECK (role IN ('owner', 'admin'))")
