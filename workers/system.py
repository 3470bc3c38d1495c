"""Plumbing tasks: the outbox sweep and a diagnostic round trip."""

from __future__ import annotations

from sqlmodel import Session

from tenants.accounts.service import get_tenant
from tenants.outbox import service as outbox
from workers.app import celery_app, publish_outbox_message
from workers.base import tenant_task

__all__ = ["ping", "relay_outbox"]


@celery_app.task(name="trailmark.system.relay_outbox", ignore_result=True, acks_late=False)
def relay_outbox() -> int:
    """Periodic sweep (beat): publish messages whose immediate relay failed."""
    return outbox.relay_all(publish_outbox_message)


@tenant_task(name="trailmark.system.ping", ignore_result=False)
def ping(session: Session, note: str = "") -> dict[str, str]:
    """Round trip through a worker and the tenant's own scope: returns the tenant's slug."""
    return {"tenant": get_tenant(session).slug, "note": note}
