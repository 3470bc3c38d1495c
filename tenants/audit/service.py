"""Writing and reading the audit log. Every dashboard action that changes something or reveals a sensitive field
calls :func:`record_action` in the same transaction as the change, so an entry exists exactly when the change does."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlmodel import Session, col, select

from tenants.models import AuditEntry

__all__ = ["AUDIT_PAGE_SIZE", "list_actions", "record_action"]

AUDIT_PAGE_SIZE = 50


def record_action(
    session: Session,
    *,
    actor_id: UUID | None,
    actor_email: str,
    action: str,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry (``action`` as ``<area>.<verb>``, ``subject`` as ``<kind>:<id>``; ``detail`` names what
    changed, never a secret or a sensitive value)."""
    entry = AuditEntry(actor_id=actor_id, actor_email=actor_email, action=action, subject=subject, detail=detail or {})
    session.add(entry)
    return entry


def list_actions(
    session: Session,
    *,
    before: tuple[datetime, UUID] | None = None,
    action_prefix: str | None = None,
    limit: int = AUDIT_PAGE_SIZE,
) -> list[AuditEntry]:
    """Newest first, keyset-paged: ``before`` is the (at, id) of the last entry of the previous page;
    ``action_prefix`` keeps the actions that start with it (``staff.`` or ``staff.invite``)."""
    query = select(AuditEntry).order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit)
    if action_prefix:
        escaped = action_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(col(AuditEntry.action).like(f"{escaped}%", escape="\\"))
    if before is not None:
        at, entry_id = before
        query = query.where((col(AuditEntry.at) < at) | ((col(AuditEntry.at) == at) & (col(AuditEntry.id) < entry_id)))
    return list(session.exec(query))
