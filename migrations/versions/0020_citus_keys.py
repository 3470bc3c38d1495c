"""Citus-ready keys and policies (docs/scale.md, rules in ``tenants.isolation.citus``).

- The public handles (API key hash, site, form and link keys, click exchange codes, Stripe endpoint tokens) were
  unique across all tenants; a table sharded by tenant can only enforce uniqueness that includes ``tenant_id``.
  Each becomes unique per tenant, with a plain index on the handle for the owner-run lookups that find its tenant
  (``tenants.isolation.public_keys``). Every handle is at least 96 random bits (``secrets.token_urlsafe``), so
  two tenants drawing the same one is not a case to design for.
- The partner scope of ``programs``, ``program_products`` and ``contacts`` held subqueries, which a shard cannot
  evaluate. Each now calls an invoker's-rights SQL function that returns the portal partner's ids (its program,
  its own contact and the contacts it referred), naming the tenant and the partner: the same rows as before.

Every primary and foreign key already included ``tenant_id`` (``migrations.tenancy.create_tenant_table``).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from migrations.tenancy import create_partner_scope

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, the unique constraint's name as created by its migration)
PUBLIC_HANDLES = (
    ("api_keys", "secret_hash", "api_keys_secret_hash_key"),
    ("email_links", "link_key", "email_links_link_key_key"),
    ("forms", "form_key", "forms_form_key_key"),
    ("link_clicks", "exchange_code_hash", "link_clicks_exchange_code_hash_key"),
    ("sites", "site_key", "sites_site_key_key"),
    ("stripe_webhooks", "endpoint_token", "stripe_webhooks_endpoint_token_key"),
)

_TENANT = "nullif(current_setting('app.tenant_id', true), '')::uuid"
_PARTNER = "nullif(current_setting('app.partner_id', true), '')::uuid"
# SECURITY INVOKER (the default): the caller's own policies still apply inside; the explicit tenant and partner
# filters make each a single-tenant query, which Citus routes to the one node holding that tenant.
FUNCTIONS = {
    "trailmark_portal_program_ids": f"""SELECT coalesce(array_agg(program_id), '{{}}') FROM partners
        WHERE tenant_id = {_TENANT} AND id = {_PARTNER}""",
    "trailmark_portal_contact_ids": f"""SELECT coalesce(array_agg(contact_id), '{{}}') FROM (
        SELECT contact_id FROM partners WHERE tenant_id = {_TENANT} AND id = {_PARTNER}
        UNION ALL
        SELECT contact_id FROM contact_referrers WHERE tenant_id = {_TENANT} AND partner_id = {_PARTNER}) AS own""",
}
NEW_SCOPES = {
    "programs": "id = ANY (trailmark_portal_program_ids())",
    "program_products": "program_id = ANY (trailmark_portal_program_ids())",
    "contacts": "id = ANY (trailmark_portal_contact_ids())",
}
# As migration 0016 left them.
OLD_SCOPES = {
    "programs": "id IN (SELECT program_id FROM partners)",
    "program_products": "program_id IN (SELECT program_id FROM partners)",
    "contacts": "id IN (SELECT contact_id FROM partners) OR id IN (SELECT contact_id FROM contact_referrers)",
}


def upgrade() -> None:
    for table, column, constraint in PUBLIC_HANDLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} UNIQUE (tenant_id, {column})")
        op.execute(f"CREATE INDEX {table}_{column}_idx ON {table} ({column})")
    for name, body in FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS uuid[] LANGUAGE sql STABLE AS $$ {body} $$")
    for table, scope in NEW_SCOPES.items():
        op.execute(f"DROP POLICY partner_scope ON {table}")
        create_partner_scope(table, scope)


def downgrade() -> None:
    for table, scope in OLD_SCOPES.items():
        op.execute(f"DROP POLICY partner_scope ON {table}")
        create_partner_scope(table, scope)
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
    for table, column, constraint in PUBLIC_HANDLES:
        op.execute(f"DROP INDEX {table}_{column}_idx")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} UNIQUE ({column})")
