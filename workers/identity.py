"""Identity tasks: merge a browser's anonymous history into its contact; re-identify a browser from
a tracked-link click."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlmodel import Session

from tenants.identity.service import link_visitor, merge_visitor_history
from tenants.isolation import current_tenant_id
from tenants.models import Evidence, LinkClick
from workers.base import tenant_task

__all__ = ["merge_history", "reidentify_from_click"]


@tenant_task(queue="identity", name="trailmark.identity.merge_visitor_history")
def merge_history(session: Session, visitor_id: str, contact_id: str, since: str | None = None) -> int:
    """Idempotent: a re-delivered task finds nothing left to move."""
    return merge_visitor_history(
        session, UUID(visitor_id), UUID(contact_id), datetime.fromisoformat(since) if since else None
    )


@tenant_task(queue="identity", name="trailmark.identity.reidentify_from_click")
def reidentify_from_click(session: Session, click_id: str, visitor_id: str, site_id: str | None = None) -> str:
    """Link the clicking browser to the link's contact by the rules (evidence: email click; a device
    with a live login is never re-pointed). Returns the outcome; a missing click (deleted) is skipped."""
    click = session.get(LinkClick, (current_tenant_id(session), UUID(click_id)))
    if click is None or not click.identifies:
        return "skipped"
    click.visitor_id = UUID(visitor_id)
    session.add(click)
    outcome = link_visitor(
        session,
        visitor_id=UUID(visitor_id),
        contact_id=click.contact_id,
        evidence=Evidence.EMAIL_CLICK,
        site_id=UUID(site_id) if site_id else None,
        detail={"click_id": click_id, "link_id": str(click.link_id)},
    )
    return outcome.value
