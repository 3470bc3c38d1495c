"""One seeder per tenant table: gives a tenant at least one row in it, so the isolation tests can
prove every table is walled off. Sign-up already fills tenants, tenant_users and api_keys; a new
tenant table without a seeder here fails ``test_every_tenant_table_has_a_seeder``."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from tenants.models import OutboxMessage


def _outbox(session: Session) -> None:
    # Added directly, not through enqueue(), so no relay publishes and deletes it.
    session.add(OutboxMessage(task="trailmark.system.ping", args=["seed"], queue="default"))


SEEDED_BY_SIGNUP = {"tenants", "tenant_users", "api_keys"}
SEEDERS: dict[str, Callable[[Session], None]] = {"outbox": _outbox}
