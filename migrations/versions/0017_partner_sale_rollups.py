"""Daily sale rollups for the partners report: purchases, customers, revenue and commissions per (UTC day, credited
partner, SubID, currency), so money is reported for the partner a purchase actually credited, per SubID.

- A purchase counts once its credit names a partner (``purchase_credits``, status credited or held; a refused
  self-referral counts for nobody), on the purchase's UTC day, under the SubID of the click that credited it
  (new column ``purchase_credits.sid``; '' for a promo code, a named partner, or a credit made before this
  revision). Revenue is net of refunds, tax included, as ``purchase_rollups``.
- A customer is the buyer's first credit with that partner (new column ``purchase_credits.new_customer``, set when
  the credit is made), so a partner's customers add up across days to its distinct buyers.
- Commissions count on their purchase's day: ``commission`` is level 1 under the crediting SubID (new column
  ``commissions.sid``), ``sub_partner_commission`` level 2 under ''. Both are the rows' current amounts (net of
  refund reductions; reversed lines are 0) plus the negative refund adjustments; rejected lines count nothing.

Statement-level triggers on ``purchase_credits`` and ``commissions`` (from their transition tables) and row-level
ones on ``purchases`` (a refund changes ``refunded_amount``) keep them in the transaction that writes those rows.
A purchase's deletion takes its contribution away before its credit and commissions go by cascade (their own
triggers then find no purchase, so nothing is taken twice). Existing rows are counted in.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from migrations.tenancy import PORTAL_PARTNER, create_partner_scope, create_tenant_table

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "tenant_id, day, partner_id, sid, currency"
MEASURES = ("purchases", "customers", "revenue", "commission", "sub_partner_commission")


def _purchase_row(row: str) -> str:
    """One purchases row of a row-level trigger (OLD or NEW) as a relation with the columns the rollup reads."""
    columns = ("tenant_id", "id", "occurred_at", "amount", "refunded_amount", "currency")
    return "(SELECT " + ", ".join(f"{row}.{name} AS {name}" for name in columns) + ")"


def _sales_of(credits: str, purchases: str, sign: int) -> str:
    return f"""SELECT c.tenant_id, (p.occurred_at AT TIME ZONE 'UTC')::date AS day, c.partner_id, c.sid,
                  p.currency::text AS currency, {sign} AS purchases, {sign} * c.new_customer::integer AS customers,
                  {sign} * (p.amount - p.refunded_amount) AS revenue, 0 AS commission, 0 AS sub_partner_commission
               FROM {credits} c JOIN {purchases} p ON p.tenant_id = c.tenant_id AND p.id = c.purchase_id
               WHERE c.status <> 'refused'"""


def _commissions_of(commissions: str, purchases: str, sign: int) -> str:
    return f"""SELECT m.tenant_id, (p.occurred_at AT TIME ZONE 'UTC')::date AS day, m.partner_id, m.sid,
                  m.currency::text AS currency, 0 AS purchases, 0 AS customers, 0 AS revenue,
                  {sign} * CASE WHEN m.level = 1 AND m.status <> 'rejected' THEN m.amount ELSE 0 END AS commission,
                  {sign} * CASE WHEN m.level = 2 AND m.status <> 'rejected' THEN m.amount ELSE 0 END
                      AS sub_partner_commission
               FROM {commissions} m JOIN {purchases} p ON p.tenant_id = m.tenant_id AND p.id = m.purchase_id"""


def _upsert(delta: str) -> str:
    # Keys in a fixed order, so concurrent purchases and refunds never deadlock on shared rows.
    sums = ", ".join(f"sum({m})" for m in MEASURES)
    nonzero = " OR ".join(f"sum({m}) <> 0" for m in MEASURES)
    adds = ", ".join(f"{m} = partner_sale_rollups.{m} + excluded.{m}" for m in MEASURES)
    return f"""INSERT INTO partner_sale_rollups ({KEY}, {", ".join(MEASURES)})
               SELECT {KEY}, {sums} FROM ({delta}) d GROUP BY {KEY} HAVING {nonzero} ORDER BY {KEY}
               ON CONFLICT ({KEY}) DO UPDATE SET {adds};"""


def _statement_function(name: str, rows_of: str) -> str:
    of = _sales_of if rows_of == "sales" else _commissions_of
    return f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {_upsert(of("new_rows", "purchases", 1))}
            ELSIF TG_OP = 'DELETE' THEN
                {_upsert(of("old_rows", "purchases", -1))}
            ELSE
                {_upsert(of("old_rows", "purchases", -1) + " UNION ALL " + of("new_rows", "purchases", 1))}
            END IF;
            RETURN NULL;
        END $$"""


_PURCHASE_FUNCTION = f"""CREATE FUNCTION trailmark_partner_sale_purchase_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            {
    _upsert(
        _sales_of("purchase_credits", _purchase_row("OLD"), -1)
        + " UNION ALL "
        + _commissions_of("commissions", _purchase_row("OLD"), -1)
    )
}
            RETURN OLD;
        END IF;
        {
    _upsert(
        " UNION ALL ".join(
            [
                _sales_of("purchase_credits", _purchase_row("OLD"), -1),
                _sales_of("purchase_credits", _purchase_row("NEW"), 1),
                _commissions_of("commissions", _purchase_row("OLD"), -1),
                _commissions_of("commissions", _purchase_row("NEW"), 1),
            ]
        )
    )
}
        RETURN NULL;
    END $$"""


def _statement_triggers(table: str, function: str) -> None:
    # Transition tables allow one event per trigger.
    op.execute(
        f"CREATE TRIGGER {table}_sale_rollup_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_sale_rollup_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_sale_rollup_update AFTER UPDATE ON {table}"
        f" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
    )


def upgrade() -> None:
    op.add_column("purchase_credits", sa.Column("sid", sa.Text(), nullable=False, server_default=""))
    op.add_column("purchase_credits", sa.Column("new_customer", sa.Boolean(), nullable=False, server_default="false"))
    op.add_column("commissions", sa.Column("sid", sa.Text(), nullable=False, server_default=""))
    # The credits made so far: each buyer's earliest purchase with a partner is its first (refused ones never count).
    op.execute(
        """UPDATE purchase_credits c SET new_customer = true FROM (
               SELECT DISTINCT ON (c.tenant_id, c.contact_id, c.partner_id) c.tenant_id, c.purchase_id
               FROM purchase_credits c JOIN purchases p ON p.tenant_id = c.tenant_id AND p.id = c.purchase_id
               WHERE c.status <> 'refused'
               ORDER BY c.tenant_id, c.contact_id, c.partner_id, p.occurred_at, p.created_at, p.id) f
           WHERE c.tenant_id = f.tenant_id AND c.purchase_id = f.purchase_id"""
    )
    op.create_index("purchase_credits_buyer_idx", "purchase_credits", ["tenant_id", "contact_id", "partner_id"])
    create_tenant_table(
        "partner_sale_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("partner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("sid", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        *[sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in MEASURES],
        primary_key=("day", "partner_id", "sid", "currency"),
    )
    # As referral_rollups: a portal transaction sees only its own partner's rows.
    create_partner_scope("partner_sale_rollups", f"partner_id = {PORTAL_PARTNER}::uuid")
    op.execute(_statement_function("trailmark_partner_sale_credit_rollup", "sales"))
    op.execute(_statement_function("trailmark_partner_sale_commission_rollup", "commissions"))
    op.execute(_PURCHASE_FUNCTION)
    _statement_triggers("purchase_credits", "trailmark_partner_sale_credit_rollup")
    _statement_triggers("commissions", "trailmark_partner_sale_commission_rollup")
    op.execute(
        """CREATE TRIGGER purchases_partner_sale_rollup AFTER UPDATE OF
               amount, refunded_amount, currency, occurred_at ON purchases
           FOR EACH ROW EXECUTE FUNCTION trailmark_partner_sale_purchase_rollup()"""
    )
    # BEFORE: the credit and the commissions are still there to be taken away with it.
    op.execute(
        """CREATE TRIGGER purchases_partner_sale_rollup_delete BEFORE DELETE ON purchases
           FOR EACH ROW EXECUTE FUNCTION trailmark_partner_sale_purchase_rollup()"""
    )
    existing = _sales_of("purchase_credits", "purchases", 1) + " UNION ALL "
    op.execute(_upsert(existing + _commissions_of("commissions", "purchases", 1)).rstrip(";"))


def downgrade() -> None:
    op.execute("DROP TRIGGER purchases_partner_sale_rollup ON purchases")
    op.execute("DROP TRIGGER purchases_partner_sale_rollup_delete ON purchases")
    for table in ("purchase_credits", "commissions"):
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER {table}_sale_rollup_{event} ON {table}")
    op.execute("DROP FUNCTION trailmark_partner_sale_purchase_rollup()")
    op.execute("DROP FUNCTION trailmark_partner_sale_credit_rollup()")
    op.execute("DROP FUNCTION trailmark_partner_sale_commission_rollup()")
    op.drop_table("partner_sale_rollups")
    op.drop_index("purchase_credits_buyer_idx", table_name="purchase_credits")
    op.drop_column("commissions", "sid")
    op.drop_column("purchase_credits", "new_customer")
    op.drop_column("purchase_credits", "sid")
