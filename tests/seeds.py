"""One seeder per tenant table: gives a tenant at least one row in it, so the isolation tests can
prove every table is walled off. Sign-up already fills tenants, tenant_users and api_keys; a new
tenant table without a seeder here fails ``test_every_tenant_table_has_a_seeder``."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import uuid4

from sqlmodel import Session

from tenants.isolation import current_tenant_id
from tenants.models import OutboxMessage, new_id
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import store_envelopes
from tenants.tracking.sites import create_site


def _outbox(session: Session) -> None:
    # Added directly, not through enqueue(), so no relay publishes and deletes it.
    session.add(OutboxMessage(task="trailmark.system.ping", args=["seed"], queue="default"))


def _tracking(session: Session) -> None:
    """A site, a visitor and one visit, stored the way ingest stores them."""
    site = create_site(session, name="Seed", allowed_origins=["https://seed.example"])
    now = int(time.time() * 1000)
    hit = Hit(hit_id=uuid4(), ts=now, url="https://seed.example/?utm_source=seed", path="/")
    envelope = Envelope(
        tenant_id=current_tenant_id(session),
        site_id=site.id,
        visitor_id=new_id(),
        received_at=now,
        hits=[hit],
    )
    store_envelopes(session, [envelope])


SEEDED_BY_SIGNUP = {"tenants", "tenant_users", "api_keys"}
SEEDERS: dict[str, Callable[[Session], None]] = {
    "outbox": _outbox,
    "sites": _tracking,
    "visitors": _tracking,
    "visits": _tracking,
}
