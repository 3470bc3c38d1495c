"""Public handles (a site key in a snippet, a form key, a link key) name a tenant without a session.

Each kind has an owner-run SQL function that returns the tenant id of a key and nothing else; the
caller then opens that tenant's scoped session to read the row itself.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from sqlalchemy import text

from tenants.isolation import system_session

__all__ = ["PublicKeyKind", "tenant_of_public_key"]

PublicKeyKind = Literal["site", "form", "link", "click_code", "tenant_slug", "domain", "stripe_endpoint"]
_FUNCTIONS: dict[str, str] = {
    "site": "trailmark_site_tenant",
    "form": "trailmark_form_tenant",
    "link": "trailmark_link_tenant",
    "click_code": "trailmark_click_code_tenant",
    "tenant_slug": "trailmark_slug_tenant",
    "domain": "trailmark_domain_tenant",
    "stripe_endpoint": "trailmark_stripe_endpoint_tenant",
}
MAX_KEY_LENGTH = 253


def tenant_of_public_key(kind: PublicKeyKind, key: str) -> UUID | None:
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    with system_session() as session:
        tenant_id = session.execute(text(f"SELECT {_FUNCTIONS[kind]}(:key)"), {"key": key}).scalar()
    return UUID(str(tenant_id)) if tenant_id else None
