"""Identity: contacts and their custom fields, forms and submissions, tracked email links and clicks,
and the append-only log of identity events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, create_tenant_table

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def _public_key_lookup(function: str, table: str, column: str) -> None:
    """A public handle (form key, link key) → its tenant, and nothing else."""
    op.execute(
        f"""CREATE FUNCTION {function}(key text) RETURNS uuid
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
            AS $$ SELECT tenant_id FROM {table} WHERE {column} = key $$"""
    )
    op.execute(f"REVOKE ALL ON FUNCTION {function}(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {function}(text) TO {APP_GROUP_ROLE}")


def upgrade() -> None:
    create_tenant_table(
        "contact_fields",
        sa.Column("key", sa.String(50), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("type IN ('text', 'number', 'boolean', 'date')", name="contact_fields_type_check"),
        primary_key=("key",),
    )
    create_tenant_table(
        "contacts",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("first_name", sa.String(200), nullable=True),
        sa.Column("last_name", sa.String(200), nullable=True),
        sa.Column("phone", sa.String(40), nullable=True),
        sa.Column("custom", JSONB(), nullable=False, server_default="{}"),
        sa.Column("first_touch", JSONB(), nullable=True),
        sa.Column("first_touch_at", TIMESTAMP, nullable=True),
        sa.Column("last_touch", JSONB(), nullable=True),
        sa.Column("last_touch_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("identified_at", TIMESTAMP, nullable=True),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.Column("merged_into", UUID(as_uuid=True), nullable=True),
    )
    # One live contact per email (case-insensitive); a contact merged away keeps its email for the record.
    op.execute("CREATE UNIQUE INDEX contacts_email_key ON contacts (tenant_id, lower(email)) WHERE merged_into IS NULL")
    op.execute("CREATE INDEX contacts_name_idx ON contacts (tenant_id, lower(last_name), lower(first_name))")

    # Visitors point at contacts now; a visitor may also be seen first away from any site (a link click).
    op.execute("ALTER TABLE visitors ALTER COLUMN site_id DROP NOT NULL")
    op.add_column("visitors", sa.Column("logged_in_until", TIMESTAMP, nullable=True))
    op.add_column("visitors", sa.Column("identified_at", TIMESTAMP, nullable=True))
    op.add_column("visitors", sa.Column("evidence", sa.Text(), nullable=True))
    op.create_foreign_key(
        "visitors_contact_fkey",
        "visitors",
        "contacts",
        ["tenant_id", "contact_id"],
        ["tenant_id", "id"],
        ondelete="SET NULL (contact_id)",
    )

    create_tenant_table(
        "forms",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("site_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("form_key", sa.String(32), nullable=False, unique=True),
        sa.Column("fields", JSONB(), nullable=False),
        sa.Column("success_redirect", sa.Text(), nullable=True),
        sa.Column("success_message", sa.Text(), nullable=True),
        sa.Column("min_fill_seconds", sa.Integer(), nullable=False, server_default="2"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
    )
    _public_key_lookup("trailmark_form_tenant", "forms", "form_key")

    create_tenant_table(
        "form_submissions",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("form_id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "form_id"], ["forms.tenant_id", "forms.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"]),
        sa.UniqueConstraint("tenant_id", "form_id", "idempotency_key", name="form_submissions_idempotency_key"),
    )
    op.create_index("form_submissions_contact_idx", "form_submissions", ["tenant_id", "contact_id"])

    create_tenant_table(
        "email_links",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("link_key", sa.String(32), nullable=False, unique=True),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("target_url", sa.Text(), nullable=False),
        sa.Column("send_id", sa.String(200), nullable=True),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"]),
    )
    op.create_index("email_links_contact_idx", "email_links", ["tenant_id", "contact_id"])
    _public_key_lookup("trailmark_link_tenant", "email_links", "link_key")

    create_tenant_table(
        "link_clicks",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("link_id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("identifies", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("exchange_code_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("exchanged_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "link_id"], ["email_links.tenant_id", "email_links.id"], ondelete="CASCADE"
        ),
    )
    op.create_index("link_clicks_contact_idx", "link_clicks", ["tenant_id", "contact_id"])
    _public_key_lookup("trailmark_click_code_tenant", "link_clicks", "exchange_code_hash")

    create_tenant_table(
        "identity_events",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("visitor_id", UUID(as_uuid=True), nullable=True),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=True),
        sa.Column("previous_contact_id", UUID(as_uuid=True), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("detail", JSONB(), nullable=False, server_default="{}"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        append_only=True,
    )
    op.create_index("identity_events_contact_idx", "identity_events", ["tenant_id", "contact_id", "created_at"])
    op.create_index("identity_events_visitor_idx", "identity_events", ["tenant_id", "visitor_id", "created_at"])


def downgrade() -> None:
    op.drop_table("identity_events")
    op.execute("DROP FUNCTION trailmark_click_code_tenant(text)")
    op.drop_table("link_clicks")
    op.execute("DROP FUNCTION trailmark_link_tenant(text)")
    op.drop_table("email_links")
    op.drop_table("form_submissions")
    op.execute("DROP FUNCTION trailmark_form_tenant(text)")
    op.drop_table("forms")
    op.drop_constraint("visitors_contact_fkey", "visitors")
    for column in ("evidence", "identified_at", "logged_in_until"):
        op.drop_column("visitors", column)
    op.drop_table("contacts")
    op.drop_table("contact_fields")
