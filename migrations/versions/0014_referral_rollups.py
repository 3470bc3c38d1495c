"""Daily referral rollups for the partners report: clicks and leads per (UTC day, partner, SubID).

Statement-level triggers on ``referral_clicks`` and ``contact_referrers`` keep them in the transaction that
writes those rows, from the transition tables, so only rows actually inserted (ingest's ``ON CONFLICT DO
NOTHING`` leaves replays out) or deleted count: exactly-once, always equal to a scan. A lead is a new contact
the partner referred: its ``first`` referrer binding (which never changes), on the day it was bound, under the
SubID of the click that bound it. Existing rows are counted in.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from migrations.tenancy import create_tenant_table

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PORTAL_PARTNER = "nullif(current_setting('app.partner_id', true), '')"
OUTSIDE_PORTAL = f"{PORTAL_PARTNER} IS NULL"
KEY = "tenant_id, day, partner_id, sid"


def _clicks_of(rows: str, sign: int) -> str:
    return f"""SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, partner_id,
                  coalesce(sid, '') AS sid, {sign} AS n FROM {rows}"""


def _leads_of(rows: str, sign: int) -> str:
    return f"""SELECT r.tenant_id, (r.bound_at AT TIME ZONE 'UTC')::date AS day, r.partner_id,
                  coalesce(c.sid, '') AS sid, {sign} AS n
               FROM {rows} r LEFT JOIN referral_clicks c ON c.tenant_id = r.tenant_id AND c.hit_id = r.click_hit_id
               WHERE r.position = 'first'"""


def _upsert(measure: str, delta: str) -> str:
    # Keys in a fixed order, so concurrent ingest batches never deadlock on shared rows.
    return f"""INSERT INTO referral_rollups ({KEY}, {measure})
               SELECT {KEY}, sum(n) FROM ({delta}) d GROUP BY {KEY} HAVING sum(n) <> 0 ORDER BY {KEY}
               ON CONFLICT ({KEY}) DO UPDATE SET {measure} = referral_rollups.{measure} + excluded.{measure};"""


def _rollup_function(name: str, measure: str, rows_of: Callable[[str, int], str]) -> str:
    return f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {_upsert(measure, rows_of("new_rows", 1))}
            ELSIF TG_OP = 'DELETE' THEN
                {_upsert(measure, rows_of("old_rows", -1))}
            ELSE
                {_upsert(measure, rows_of("old_rows", -1) + " UNION ALL " + rows_of("new_rows", 1))}
            END IF;
            RETURN NULL;
        END $$"""


def _triggers(table: str, function: str) -> None:
    # Transition tables allow one event per trigger.
    op.execute(
        f"CREATE TRIGGER {table}_rollup_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_rollup_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_rollup_update AFTER UPDATE ON {table}"
        f" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


def upgrade() -> None:
    create_tenant_table(
        "referral_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("sid", sa.Text(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("leads", sa.BigInteger(), nullable=False, server_default="0"),
        primary_key=("day", "partner_id", "sid"),
    )
    # As the partner tables: a portal transaction sees only its own partner's rows (migration 0012).
    predicate = f"partner_id = {PORTAL_PARTNER}::uuid"
    op.execute(
        "CREATE POLICY partner_scope ON referral_rollups AS RESTRICTIVE"
        f" USING ({OUTSIDE_PORTAL} OR {predicate}) WITH CHECK ({OUTSIDE_PORTAL} OR {predicate})"
    )
    op.execute(_rollup_function("trailmark_referral_click_rollup", "clicks", _clicks_of))
    op.execute(_rollup_function("trailmark_referral_lead_rollup", "leads", _leads_of))
    _triggers("referral_clicks", "trailmark_referral_click_rollup")
    _triggers("contact_referrers", "trailmark_referral_lead_rollup")
    op.execute(
        f"""INSERT INTO referral_rollups ({KEY}, clicks, leads)
            SELECT {KEY}, sum(clicks), sum(leads) FROM (
                SELECT {KEY}, n AS clicks, 0 AS leads FROM ({_clicks_of("referral_clicks", 1)}) c
                UNION ALL SELECT {KEY}, 0, n FROM ({_leads_of("contact_referrers", 1)}) l) d
            GROUP BY {KEY}"""
    )


def downgrade() -> None:
    for table in ("referral_clicks", "contact_referrers"):
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER {table}_rollup_{event} ON {table}")
    op.execute("DROP FUNCTION trailmark_referral_click_rollup()")
    op.execute("DROP FUNCTION trailmark_referral_lead_rollup()")
    op.drop_table("referral_rollups")
