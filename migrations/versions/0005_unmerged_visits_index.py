"""An index of the visits not yet attributed to a contact, so merging a long anonymous history stays
linear: each batch finds its next rows without re-reading the ones already moved.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX visits_unmerged_idx ON visits (tenant_id, visitor_id) WHERE contact_id IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX visits_unmerged_idx")
