"""The one way a revision creates a tenant-owned table: the table and its row-level security together.

``create_tenant_table`` adds ``tenant_id`` (leading the primary key, referencing ``tenants``), then
``ENABLE`` + ``FORCE`` row-level security, the isolation policy and the app role's grants, so no later
table can be created without them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from tenants.isolation.migrate import APP_GROUP_ROLE

__all__ = [
    "APP_GROUP_ROLE",
    "OUTSIDE_PORTAL",
    "PORTAL_PARTNER",
    "TENANT_PREDICATE",
    "create_partner_scope",
    "create_tenant_table",
    "enable_tenant_isolation",
]

# nullif: after a transaction-local set_config ends, the setting reads '' rather than NULL on that
# connection, and ''::uuid would raise instead of matching nothing.
TENANT_PREDICATE = "tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid"

PORTAL_PARTNER = "nullif(current_setting('app.partner_id', true), '')"
"""The partner of a portal transaction (tenants.isolation.partner_session), NULL outside the portal."""
# True outside the portal. Written as an IS NOT NULL test, not as `PORTAL_PARTNER IS NULL`: the planner guesses
# that a variable-free IS NULL keeps 0.5 % of the rows, and since this qualifies every read of every tenant table,
# that guess shrank every row estimate 200-fold and turned ingest's joins into nested loops (migration 0016).
OUTSIDE_PORTAL = "nullif(coalesce(current_setting('app.partner_id', true), '') = '', false) IS NOT NULL"


def create_tenant_table(
    name: str, *columns: Any, primary_key: tuple[str, ...] = ("id",), append_only: bool = False, **kwargs: Any
) -> None:
    """``append_only``: the app role may insert and read, never change or delete (audit logs)."""
    op.create_table(
        name,
        sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("tenant_id", *primary_key, name=f"{name}_pkey"),
        **kwargs,
    )
    enable_tenant_isolation(name, privileges="SELECT, INSERT" if append_only else "SELECT, INSERT, UPDATE, DELETE")


def enable_tenant_isolation(
    name: str, predicate: str = TENANT_PREDICATE, privileges: str = "SELECT, INSERT, UPDATE, DELETE"
) -> None:
    op.execute(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {name} USING ({predicate}) WITH CHECK ({predicate})")
    op.execute(f"GRANT {privileges} ON {name} TO {APP_GROUP_ROLE}")


def create_partner_scope(name: str, predicate: str | None = None) -> None:
    """What a portal transaction may see of a tenant table: the rows ``predicate`` admits, or none at all.

    RESTRICTIVE, so it is ANDed with the tenant policy: the portal narrows a tenant's rows and never widens them.
    Every tenant table has one (``tests/test_isolation.py`` checks the catalog), so a new table fails closed.
    """
    scope = OUTSIDE_PORTAL if predicate is None else f"{OUTSIDE_PORTAL} OR {predicate}"
    op.execute(f"CREATE POLICY partner_scope ON {name} AS RESTRICTIVE USING ({scope}) WITH CHECK ({scope})")
