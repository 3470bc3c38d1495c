"""Indexes for the dashboard's lists and timelines: contacts newest first (keyset on created time and id),
custom-field equality, and every timeline source read by tenant, contact and time, so a page of a long
history is an index range scan, never a sort of everything the contact ever did.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The contact list: live contacts, newest first, paged by (created_at, id).
    op.execute(
        "CREATE INDEX contacts_created_idx ON contacts (tenant_id, created_at DESC, id DESC) WHERE merged_into IS NULL"
    )
    # field.<key>=<value>: containment on the custom values.
    op.execute("CREATE INDEX contacts_custom_idx ON contacts USING gin (custom jsonb_path_ops)")
    # Timeline sources, each by tenant, contact and time (with the row id as the tie-break of the cursor).
    op.execute("DROP INDEX visits_contact_idx")
    op.execute(
        "CREATE INDEX visits_contact_time_idx ON visits (tenant_id, contact_id, occurred_at, hit_id)"
        " WHERE contact_id IS NOT NULL"
    )
    op.execute("DROP INDEX form_submissions_contact_idx")
    op.execute(
        "CREATE INDEX form_submissions_contact_time_idx ON form_submissions (tenant_id, contact_id, created_at, id)"
    )
    op.execute("DROP INDEX link_clicks_contact_idx")
    op.execute("CREATE INDEX link_clicks_contact_time_idx ON link_clicks (tenant_id, contact_id, created_at, id)")
    op.execute(
        "CREATE INDEX identity_events_previous_idx ON identity_events (tenant_id, previous_contact_id, created_at)"
        " WHERE previous_contact_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX identity_events_previous_idx")
    op.execute("DROP INDEX link_clicks_contact_time_idx")
    op.execute("CREATE INDEX link_clicks_contact_idx ON link_clicks (tenant_id, contact_id)")
    op.execute("DROP INDEX form_submissions_contact_time_idx")
    op.execute("CREATE INDEX form_submissions_contact_idx ON form_submissions (tenant_id, contact_id)")
    op.execute("DROP INDEX visits_contact_time_idx")
    op.execute("CREATE INDEX visits_contact_idx ON visits (tenant_id, contact_id) WHERE contact_id IS NOT NULL")
    op.execute("DROP INDEX contacts_custom_idx")
    op.execute("DROP INDEX contacts_created_idx")
