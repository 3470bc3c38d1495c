"""Mark the one site per tenant that carries the tracker of its hosted pages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sites", sa.Column("hosted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("CREATE UNIQUE INDEX sites_hosted_key ON sites (tenant_id) WHERE hosted")


def downgrade() -> None:
    op.execute("DROP INDEX sites_hosted_key")
    op.drop_column("sites", "hosted")
