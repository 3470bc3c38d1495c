"""Tracking: sites, visitors, and visits partitioned by month.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from migrations.tenancy import APP_GROUP_ROLE, TENANT_PREDICATE, create_tenant_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    create_tenant_table(
        "sites",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("site_key", sa.String(32), nullable=False, unique=True),
        sa.Column("allowed_origins", ARRAY(sa.Text()), nullable=False),
        sa.Column("honor_dnt", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("truncate_ip", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("partner_params", ARRAY(sa.Text()), nullable=False),
        sa.Column("bot_policy", sa.Text(), nullable=False, server_default="flag"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("bot_policy IN ('flag', 'drop')", name="sites_bot_policy_check"),
    )
    # Public endpoints know only a site key (it is in the page); this returns the tenant it belongs
    # to and nothing else, so they can open a tenant-scoped session.
    op.execute(
        """CREATE FUNCTION trailmark_site_tenant(key text) RETURNS uuid
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$ SELECT tenant_id FROM sites WHERE site_key = key $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_site_tenant(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_site_tenant(text) TO {APP_GROUP_ROLE}")

    create_tenant_table(
        "visitors",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("site_id", UUID(as_uuid=True), nullable=False),
        sa.Column("contact_id", UUID(as_uuid=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_touch", JSONB(), nullable=True),
        sa.Column("first_touch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_touch", JSONB(), nullable=True),
        sa.Column("last_touch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("visit_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("is_bot", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
    )
    op.create_index("visitors_last_seen_idx", "visitors", ["tenant_id", "last_seen_at"])
    op.create_index("visitors_contact_idx", "visitors", ["tenant_id", "contact_id"])

    # Partitioned by the hit's own time, so a re-sent hit lands in the same partition and the
    # primary key (which must include the partition key) still makes storage exactly-once.
    op.execute(
        """CREATE TABLE visits (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            hit_id uuid NOT NULL,
            occurred_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL,
            visitor_id uuid NOT NULL,
            site_id uuid NOT NULL,
            contact_id uuid,
            type text NOT NULL CHECK (type IN ('pageview', 'event')),
            event_name text,
            url text NOT NULL,
            path text NOT NULL,
            title text,
            referrer text,
            utm_source text, utm_medium text, utm_campaign text, utm_term text, utm_content text, utm_id text,
            click_ids jsonb NOT NULL DEFAULT '{}',
            ad_cookies jsonb NOT NULL DEFAULT '{}',
            partner_code text,
            lang text,
            screen text,
            props jsonb,
            user_agent text,
            ip inet,
            is_bot boolean NOT NULL DEFAULT false,
            bot_reason text,
            PRIMARY KEY (tenant_id, hit_id, occurred_at),
            FOREIGN KEY (tenant_id, visitor_id) REFERENCES visitors (tenant_id, id) ON DELETE CASCADE
        ) PARTITION BY RANGE (occurred_at)"""
    )
    op.execute("CREATE INDEX visits_visitor_idx ON visits (tenant_id, visitor_id, occurred_at)")
    op.execute("CREATE INDEX visits_time_idx ON visits (tenant_id, occurred_at, hit_id)")
    op.execute("CREATE INDEX visits_contact_idx ON visits (tenant_id, contact_id) WHERE contact_id IS NOT NULL")
    op.execute("ALTER TABLE visits ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE visits FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON visits USING ({TENANT_PREDICATE}) WITH CHECK ({TENANT_PREDICATE})")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON visits TO {APP_GROUP_ROLE}")
    # Partitions are created by the owner (the app role owns nothing), each with the same policy, so
    # reading a partition directly is walled off too. Beat calls this ahead of time; ingest calls it
    # when a hit finds no partition.
    op.execute(
        f"""CREATE FUNCTION trailmark_ensure_visit_partitions(first_month date, months integer)
           RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
           AS $$
           DECLARE
               month date;
               name text;
               created integer := 0;
           BEGIN
               IF months < 1 OR months > 36 THEN
                   RAISE EXCEPTION 'months must be 1..36';
               END IF;
               FOR i IN 0 .. months - 1 LOOP
                   month := date_trunc('month', first_month)::date + make_interval(months => i);
                   name := 'visits_' || to_char(month, 'YYYY_MM');
                   IF to_regclass(name) IS NULL THEN
                       EXECUTE format(
                           'CREATE TABLE %I PARTITION OF visits FOR VALUES FROM (%L) TO (%L)',
                           name, month, month + interval '1 month');
                       EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
                       EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
                       EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (%s) WITH CHECK (%s)',
                           name, {_sql_literal(TENANT_PREDICATE)}, {_sql_literal(TENANT_PREDICATE)});
                       EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO {APP_GROUP_ROLE}', name);
                       created := created + 1;
                   END IF;
               END LOOP;
               RETURN created;
           END $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_ensure_visit_partitions(date, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_ensure_visit_partitions(date, integer) TO {APP_GROUP_ROLE}")
    # Hits may be up to 30 days old when they arrive (offline retries): cover last month to 3 ahead.
    op.execute("SELECT trailmark_ensure_visit_partitions((now() - interval '1 month')::date, 5)")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_ensure_visit_partitions(date, integer)")
    op.execute("DROP TABLE visits")
    op.drop_table("visitors")
    op.execute("DROP FUNCTION trailmark_site_tenant(text)")
    op.drop_table("sites")
