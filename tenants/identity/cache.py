"""Who an identified browser is, cached per process for page views (see ``tenants.pages.serving``).

Only people are cached, never "anonymous", so a browser that has just identified is seen at once.
Identity changes made in this process (a form, a login) drop the browser's entry right away; changes
made by a worker (a link click) show within :data:`IDENTIFIED_SECONDS`.
"""

from __future__ import annotations

from uuid import UUID

from tenants.cache import TTLCache
from tenants.models import Contact

__all__ = ["IDENTIFIED_SECONDS", "forget_identity", "identities"]

IDENTIFIED_SECONDS = 5.0

identities: TTLCache[tuple[UUID, UUID], tuple[Contact, str | None]] = TTLCache(IDENTIFIED_SECONDS)
"""(tenant, visitor or contact) → the contact and the evidence."""


def forget_identity(tenant_id: UUID, visitor_or_contact_id: UUID) -> None:
    identities.forget((tenant_id, visitor_or_contact_id))
