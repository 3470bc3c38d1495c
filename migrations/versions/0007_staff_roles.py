"""Staff roles for the dashboard: owner, admin, editor, viewer.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

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


def downgrade() -> None:
    op.execute("ALTER TABLE tenant_users DROP CONSTRAINT tenant_users_role_check")
    op.execute("ALTER TABLE tenant_users ADD CONSTRAINT tenant_users_role_check CHECK (role IN ('owner', 'admin'))")
