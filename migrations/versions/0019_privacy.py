"""Privacy: erasing a person (``erasures``, ``contacts.erased_at``), the retention policy of each tenant
(``privacy_settings``), and rollups that keep their counts when personal rows go.

Rollups hold no personal data, so erasing a person or expiring old visitors must leave them as they are. Their
triggers therefore skip a transaction that sets ``app.keep_rollups`` to ``on`` (``tenants.privacy``): deleting a
referral click, a bound referrer, or anonymising a contact's or a purchase's touches changes nothing counted.

``identity_events`` and ``audit_log`` are append-only for the app role; an erase still has to strip personal
details from them. ``trailmark_scrub_person`` (run as the owner, still under the caller's tenant: the tables
force row-level security on their owner too) does only that, for the ids and values it is given.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, create_partner_scope, create_tenant_table

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
COUNTING = "current_setting('app.keep_rollups', true) IS DISTINCT FROM 'on'"
"""The WHEN of every rollup trigger: off while personal rows are erased or expired."""

# (trigger, table, timing and events, level, function), as migrations 0008/0010, 0011 and 0014 created them.
ROW_TRIGGERS = [
    (
        "contact_rollup",
        "contacts",
        "AFTER INSERT OR DELETE OR UPDATE OF created_at, first_touch, first_touch_at, last_touch, merged_into",
        "trailmark_contact_rollup",
    ),
    (
        "purchase_rollup",
        "purchases",
        "AFTER INSERT OR DELETE OR UPDATE OF amount, refunded_amount, currency, occurred_at, first_touch, "
        "last_touch, new_customer",
        "trailmark_purchase_rollup",
    ),
]
STATEMENT_TRIGGERS = [
    (table, event, transition, function)
    for table, function in (
        ("referral_clicks", "trailmark_referral_click_rollup"),
        ("contact_referrers", "trailmark_referral_lead_rollup"),
    )
    for event, transition in (
        ("insert", "REFERENCING NEW TABLE AS new_rows"),
        ("delete", "REFERENCING OLD TABLE AS old_rows"),
        ("update", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    )
]


def _create_triggers(when: str | None) -> None:
    condition = f"WHEN ({when})" if when else ""
    for name, table, events, function in ROW_TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"CREATE TRIGGER {name} {events} ON {table} FOR EACH ROW {condition} EXECUTE FUNCTION {function}()")
    for table, event, transition, function in STATEMENT_TRIGGERS:
        op.execute(f"DROP TRIGGER {table}_rollup_{event} ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_rollup_{event} AFTER {event.upper()} ON {table} {transition}"
            f" FOR EACH STATEMENT {condition} EXECUTE FUNCTION {function}()"
        )


SCRUB_FUNCTION = """CREATE FUNCTION trailmark_scrub_person(contact_ids uuid[], visitor_ids uuid[], terms text[])
    RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    DECLARE
        -- Stated, not left to row-level security: an owner that is a superuser bypasses it.
        own_tenant uuid := nullif(current_setting('app.tenant_id', true), '')::uuid;
        events bigint;
        entries bigint;
    BEGIN
        -- What happened stays (kind, when, evidence, which placeholder contact); the devices and details go.
        -- An event of someone else that only names the person as a device's previous contact (a shared laptop
        -- re-pointed to them) is theirs: it keeps their device, and the placeholder id names no one.
        UPDATE identity_events SET visitor_id = NULL, detail = '{"erased": true}'::jsonb
        WHERE (contact_id = ANY(contact_ids) OR visitor_id = ANY(visitor_ids))
          AND (visitor_id IS NOT NULL OR detail <> '{"erased": true}'::jsonb) AND tenant_id = own_tenant;
        GET DIAGNOSTICS events = ROW_COUNT;
        -- Staff actions stay; a value of the person's (a merged contact's email) leaves their detail.
        UPDATE audit_log SET detail = (
            SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(detail)
            WHERE NOT lower(value #>> '{}') = ANY(terms))
        WHERE tenant_id = own_tenant
          AND EXISTS (SELECT 1 FROM jsonb_each(detail) WHERE lower(value #>> '{}') = ANY(terms));
        GET DIAGNOSTICS entries = ROW_COUNT;
        RETURN events + entries;
    END $$"""


def upgrade() -> None:
    op.add_column("contacts", sa.Column("erased_at", TIMESTAMP, nullable=True))
    create_tenant_table(
        "erasures",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("requested_via", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", TIMESTAMP, nullable=False),
        sa.Column("confirmed_by", sa.Text(), nullable=True),
        sa.Column("confirmed_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("report", JSONB(), nullable=False, server_default="{}"),
        sa.ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"),
        sa.CheckConstraint(
            "status IN ('awaiting_confirmation', 'queued', 'done', 'declined', 'failed')", name="erasures_status_check"
        ),
    )
    create_partner_scope("erasures")
    op.create_index("erasures_contact_idx", "erasures", ["tenant_id", "contact_id"])
    op.create_index("erasures_requested_idx", "erasures", ["tenant_id", "requested_at"])
    create_tenant_table(
        "privacy_settings",
        sa.Column("anonymous_visitor_months", sa.Integer(), nullable=False, server_default="13"),
        sa.Column("identified_visit_months", sa.Integer(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("last_expired_at", TIMESTAMP, nullable=True),
        sa.Column("last_expired_visitors", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_expired_visits", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("anonymous_visitor_months BETWEEN 1 AND 120", name="privacy_settings_anonymous_check"),
        sa.CheckConstraint("identified_visit_months BETWEEN 1 AND 600", name="privacy_settings_identified_check"),
        primary_key=(),
    )
    create_partner_scope("privacy_settings")
    _create_triggers(COUNTING)
    op.execute(SCRUB_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION trailmark_scrub_person(uuid[], uuid[], text[]) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_scrub_person(uuid[], uuid[], text[]) TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_scrub_person(uuid[], uuid[], text[])")
    _create_triggers(None)
    op.drop_table("privacy_settings")
    op.drop_table("erasures")
    op.drop_column("contacts", "erased_at")
