"""The portal's partner scope, rewritten so that the planner's row estimates stay right outside the portal.

Migrations 0012, 0014 and 0015 wrote "outside the portal" as ``nullif(current_setting('app.partner_id', true),
'') IS NULL``. That test is ANDed into every read of every tenant table, and the planner guesses that a
variable-free IS NULL keeps 0.5 % of the rows: every estimate shrank 200-fold, ingest's visitor update became a
nested loop over the whole tenant, and ingest fell from keeping up with collect to about 800 hits a second.
The same test as IS NOT NULL (``migrations.tenancy.OUTSIDE_PORTAL``) is estimated to keep 99.5 %. What a portal
transaction may see is unchanged.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from migrations.tenancy import create_partner_scope

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PORTAL_PARTNER = "nullif(current_setting('app.partner_id', true), '')"
OWN_PARTNER = f"partner_id = {PORTAL_PARTNER}::uuid"
# As migrations 0012, 0014 and 0015 left them; every other tenant table shows the portal nothing.
PARTNER_SCOPES = {
    "partners": f"id = {PORTAL_PARTNER}::uuid",
    "partner_accounts": OWN_PARTNER,
    "partner_codes": OWN_PARTNER,
    "referral_clicks": OWN_PARTNER,
    "contact_referrers": OWN_PARTNER,
    "programs": "id IN (SELECT program_id FROM partners)",
    "program_products": "program_id IN (SELECT program_id FROM partners)",
    "contacts": "id IN (SELECT contact_id FROM partners) OR id IN (SELECT contact_id FROM contact_referrers)",
    "referral_rollups": OWN_PARTNER,
    "purchase_credits": OWN_PARTNER,
    "commissions": OWN_PARTNER,
    "payouts": OWN_PARTNER,
}


def _scoped_tables() -> list[str]:
    rows = op.get_bind().exec_driver_sql(
        """SELECT c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
           WHERE p.polname = 'partner_scope' ORDER BY c.relname"""
    )
    return [name for (name,) in rows]


def upgrade() -> None:
    for table in _scoped_tables():
        op.execute(f"DROP POLICY partner_scope ON {table}")
        create_partner_scope(table, PARTNER_SCOPES.get(table))


def downgrade() -> None:
    old_outside = f"{PORTAL_PARTNER} IS NULL"
    for table in _scoped_tables():
        predicate = PARTNER_SCOPES.get(table)
        scope = old_outside if predicate is None else f"{old_outside} OR {predicate}"
        op.execute(f"ALTER POLICY partner_scope ON {table} USING ({scope}) WITH CHECK ({scope})")
