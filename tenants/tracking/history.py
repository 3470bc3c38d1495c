"""Reading visitors and visits back, with filters and stable cursor pagination."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from tenants.errors import Invalid
from tenants.isolation import get_owned
from tenants.models import Visit, Visitor
from tenants.tracking.segments import TouchFilter, touch_conditions, visit_conditions

__all__ = [
    "Page",
    "VisitFilter",
    "VisitorFilter",
    "get_visitor",
    "list_visitors",
    "list_visits",
    "visitor_visits",
    "visits_of",
]

T = TypeVar("T")
MAX_PAGE = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class VisitorFilter:
    """Which visitors a list shows; None means any."""

    site_id: UUID | None = None
    is_bot: bool | None = None
    identified: bool | None = None
    """Linked to a contact (True) or anonymous (False)."""
    touch: TouchFilter | None = None


@dataclass(frozen=True)
class VisitFilter:
    since: datetime | None = None
    until: datetime | None = None
    site_id: UUID | None = None
    visitor_id: UUID | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    is_bot: bool | None = None
    type: str | None = None
    dimensions: dict[str, str] = field(default_factory=dict)
    """Attribution dimensions of the visit itself (channel, source, medium, campaign, partner), by name."""


def _encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, count: int) -> list[str]:
    try:
        parts = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
    except ValueError:
        parts = []
    if len(parts) != count:
        raise Invalid("the cursor is not one this API returned", {"cursor": "invalid"})
    return parts


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit is out of range", {"limit": f"must be 1 to {MAX_PAGE}"})
    return limit


def get_visitor(session: Session, visitor_id: UUID) -> Visitor:
    return get_owned(session, Visitor, visitor_id, "visitor")


def visitor_visits(session: Session, visitor_id: UUID, *, cursor: str | None = None, limit: int = 50) -> Page[Visit]:
    """The visitor's visits, newest first, one keyset page at a time (on the visitor and time index)."""
    get_visitor(session, visitor_id)
    return list_visits(session, VisitFilter(visitor_id=visitor_id), cursor=cursor, limit=limit)


def visits_of(session: Session, visitor_id: UUID, limit: int = 100) -> list[Visit]:
    """The visitor's visits, oldest first (the first ``limit``)."""
    query = (
        select(Visit)
        .where(Visit.visitor_id == visitor_id)
        .order_by(col(Visit.occurred_at), col(Visit.hit_id))
        .limit(_limit(limit))
    )
    return list(session.exec(query))


def list_visitors(
    session: Session, filters: VisitorFilter | None = None, *, cursor: str | None = None, limit: int = 50
) -> Page[Visitor]:
    """Newest visitors first, filtered by site, bot flag, identified (linked to a contact) or anonymous, and
    their first or last touch; the cursor is the last id seen (ids are time-ordered)."""
    filters = filters or VisitorFilter()
    query = select(Visitor).order_by(col(Visitor.id).desc()).limit(_limit(limit) + 1)
    if filters.site_id is not None:
        query = query.where(Visitor.site_id == filters.site_id)
    if filters.is_bot is not None:
        query = query.where(Visitor.is_bot == filters.is_bot)
    if filters.identified is not None:
        linked = col(Visitor.contact_id)
        query = query.where(linked.is_not(None) if filters.identified else linked.is_(None))
    if filters.touch is not None:
        query = query.where(*touch_conditions(filters.touch, table="visitors"))
    if cursor:
        (last_id,) = _decode_cursor(cursor, 1)
        try:
            query = query.where(col(Visitor.id) < UUID(last_id))
        except ValueError:
            raise Invalid("the cursor is not one this API returned", {"cursor": "invalid"}) from None
    rows = list(session.exec(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(str(rows[-1].id)) if more else None)


def list_visits(session: Session, filters: VisitFilter, *, cursor: str | None = None, limit: int = 50) -> Page[Visit]:
    """Newest visits first, filtered; the cursor is the last (time, hit id) seen."""
    query = select(Visit).order_by(col(Visit.occurred_at).desc(), col(Visit.hit_id).desc()).limit(_limit(limit) + 1)
    conditions = {
        "site_id": filters.site_id,
        "visitor_id": filters.visitor_id,
        "utm_source": filters.utm_source,
        "utm_medium": filters.utm_medium,
        "utm_campaign": filters.utm_campaign,
        "is_bot": filters.is_bot,
        "type": filters.type,
    }
    for name, value in conditions.items():
        if value is not None:
            query = query.where(getattr(Visit, name) == value)
    query = query.where(*visit_conditions(filters.dimensions))
    if filters.since is not None:
        query = query.where(col(Visit.occurred_at) >= filters.since)
    if filters.until is not None:
        query = query.where(col(Visit.occurred_at) < filters.until)
    if cursor:
        at, hit_id = _decode_cursor(cursor, 2)
        try:
            last_at, last_hit = datetime.fromisoformat(at), UUID(hit_id)
        except ValueError:
            raise Invalid("the cursor is not one this API returned", {"cursor": "invalid"}) from None
        query = query.where(
            or_(
                col(Visit.occurred_at) < last_at,
                and_(col(Visit.occurred_at) == last_at, col(Visit.hit_id) < last_hit),
            )
        )
    rows = list(session.exec(query))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1].occurred_at.isoformat(), str(rows[-1].hit_id)) if more else None
    return Page(rows, next_cursor)
