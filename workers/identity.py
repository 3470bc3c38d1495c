"""Identity tasks: merge a browser's anonymous history into its contact (enqueued by every link)."""

from __future__ import annotations

from uuid import UUID

from sqlmodel import Session

from tenants.identity.service import merge_visitor_history
from workers.base import tenant_task

__all__ = ["merge_history"]


@tenant_task(name="trailmark.identity.merge_visitor_history")
def merge_history(session: Session, visitor_id: str, contact_id: str) -> int:
    """Idempotent: a re-delivered task finds nothing left to move."""
    return merge_visitor_history(session, UUID(visitor_id), UUID(contact_id))
