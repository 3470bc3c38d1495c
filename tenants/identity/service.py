"""Who a browser is: linking visitors to contacts by evidence, merging anonymous history, merging
contacts on request, the identification level of a request, and a contact's timeline.

The rules (docs/architecture.md, Identity):
1. An anonymous visitor that identifies is linked; its anonymous history is merged asynchronously.
2. A visitor of contact A that identifies as B is re-pointed to B; A and B are never merged by this and
   A keeps what happened before; the change is logged.
3. A click never downgrades or re-points a device that holds a live login.
4. Contacts merge only by an explicit tenant action.
5. Every link, re-point and merge is an append-only identity event with its evidence.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import text, tuple_
from sqlmodel import Session, col, select

from tenants.contacts.service import get_contact
from tenants.errors import Conflict, Invalid
from tenants.identity.cache import forget_identity
from tenants.isolation import current_tenant_id
from tenants.models import (
    Contact,
    Conversion,
    ConversionDelivery,
    Evidence,
    FormSubmission,
    IdentityEvent,
    Integration,
    LinkClick,
    Purchase,
    Visit,
    Visitor,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.partners.referrals import bind_referrers
from tenants.security.tokens import get_signer
from tenants.tracking.touches import CAMPAIGN_SQL, TOUCH_SQL
from tenants.tracking.visitors import VISITOR_PURPOSE

__all__ = [
    "MERGE_BATCH",
    "MERGE_TASK",
    "Level",
    "LinkOutcome",
    "Resolution",
    "TimelinePage",
    "link_visitor",
    "merge_contacts",
    "merge_visitor_history",
    "resolve",
    "timeline",
]

MERGE_TASK = "trailmark.identity.merge_visitor_history"
MERGE_BATCH = 2000
"""Visits re-attributed per transaction: short row locks, however long the history."""


class Level(StrEnum):
    ANONYMOUS = "anonymous"
    IDENTIFIED = "identified"
    LOGGED_IN = "logged_in"


class LinkOutcome(StrEnum):
    LINKED = "linked"
    """An anonymous visitor now points at the contact; its history will be merged."""
    UNCHANGED = "unchanged"
    REPOINTED = "repointed"
    """It pointed at another contact and now points at this one; the other keeps its past."""
    REFUSED = "repoint_refused"
    """A click tried to re-point a device with a live login: nothing changed, the conflict is logged."""


def _event(session: Session, kind: str, **fields: Any) -> None:
    session.add(IdentityEvent(kind=kind, **fields))


def link_visitor(
    session: Session,
    *,
    visitor_id: UUID,
    contact_id: UUID,
    evidence: Evidence,
    site_id: UUID | None = None,
    detail: dict[str, Any] | None = None,
    new_contact: bool = False,
) -> LinkOutcome:
    """Apply the identity rules to one browser and one piece of evidence, in the caller's transaction,
    and enqueue the history merge (through the outbox) when the visitor's contact changed. The partners of the
    browser's live referrals are bound to the contact (``new_contact``: it was made by this evidence, so it
    gets its first referrer too)."""
    tenant_id = current_tenant_id(session)
    now = utcnow()
    # The browser may not have been ingested yet (its hits still in the stream): make sure it exists.
    session.execute(
        text(
            """INSERT INTO visitors (tenant_id, id, site_id, first_seen_at, last_seen_at, created_at)
               VALUES (:t, :v, :s, :now, :now, :now) ON CONFLICT DO NOTHING"""
        ),
        {"t": tenant_id, "v": visitor_id, "s": site_id, "now": now},
    )
    visitor = session.exec(select(Visitor).where(Visitor.id == visitor_id).with_for_update()).one()
    detail = detail or {}
    previous = visitor.contact_id
    if previous == contact_id:
        if visitor.evidence is None or Evidence(visitor.evidence).rank < evidence.rank:
            visitor.evidence = evidence.value  # stronger proof of the same person
            session.add(visitor)
        bind_referrers(
            session,
            contact_id=contact_id,
            visitor_id=visitor_id,
            new_contact=new_contact,
            evidence=evidence.value,
            now=now,
        )
        return LinkOutcome.UNCHANGED
    live_login = visitor.logged_in_until is not None and visitor.logged_in_until > now
    if previous is not None and live_login and evidence != Evidence.LOGIN:
        _event(
            session,
            LinkOutcome.REFUSED.value,
            visitor_id=visitor_id,
            contact_id=contact_id,
            previous_contact_id=previous,
            evidence=evidence.value,
            detail={**detail, "conflict": True, "reason": "the device holds a live login"},
        )
        return LinkOutcome.REFUSED
    forget_identity(tenant_id, visitor_id)  # this process's pages see the change at once
    visitor.contact_id = contact_id
    visitor.evidence = evidence.value
    visitor.identified_at = now
    session.add(visitor)
    contact = get_contact(session, contact_id)
    if contact.identified_at is None:
        contact.identified_at = now
        session.add(contact)
    outcome = LinkOutcome.LINKED if previous is None else LinkOutcome.REPOINTED
    _event(
        session,
        outcome.value,
        visitor_id=visitor_id,
        contact_id=contact_id,
        previous_contact_id=previous,
        evidence=evidence.value,
        # new_contact: ingest binds a referral click it stores late (after this) as this identification would have.
        detail={**detail, "conflict": previous is not None, "new_contact": new_contact},
    )
    bind_referrers(
        session, contact_id=contact_id, visitor_id=visitor_id, new_contact=new_contact, evidence=evidence.value, now=now
    )
    if outcome == LinkOutcome.LINKED:
        # Its anonymous history is this contact's. A re-pointed device's history stays with the
        # contact it had; its visits from now on are stored with the new one.
        outbox.enqueue(session, MERGE_TASK, str(visitor_id), str(contact_id), queue="identity")
    return outcome


_MERGE_ALL = text(
    """UPDATE visits SET contact_id = :c
       WHERE (tenant_id, hit_id, occurred_at) IN (
           SELECT tenant_id, hit_id, occurred_at FROM visits
           WHERE tenant_id = :t AND visitor_id = :v AND contact_id IS NULL LIMIT :batch)"""
)


def merge_visitor_history(session: Session, visitor_id: UUID, contact_id: UUID) -> int:
    """Give the contact the visitor's anonymous visits (all stored before its first link) in batches of
    :data:`MERGE_BATCH`, each its own transaction; then refresh the contact's touches. Idempotent: a
    second run finds nothing left to move."""
    tenant_id = current_tenant_id(session)
    params: dict[str, Any] = {"t": tenant_id, "v": visitor_id, "c": contact_id, "batch": MERGE_BATCH}
    moved = 0
    while True:
        count = session.execute(_MERGE_ALL, params).rowcount  # type: ignore[attr-defined]
        moved += count
        if count < MERGE_BATCH:
            break
        session.commit()  # release this batch's row locks before the next
    # The last batch, the touches and the event commit together (in the caller's transaction).
    refresh_contact_touches(session, contact_id)
    if moved:
        _event(
            session,
            "history_merged",
            visitor_id=visitor_id,
            contact_id=contact_id,
            detail={"visits": moved},
        )
    return moved


def refresh_contact_touches(session: Session, contact_id: UUID) -> None:
    """From the contact's own visits and the landings of the devices first identified as this contact
    (not every device's: a re-pointed one's past is someone else's): first touch the earliest, set once;
    last touch the latest visit with campaign data."""
    session.execute(_REFRESH_TOUCHES, {"c": contact_id, "t": current_tenant_id(session)})


_REFRESH_TOUCHES = text(
    f"""WITH f AS (SELECT touch, at FROM (
                       (SELECT {TOUCH_SQL} AS touch, v.occurred_at AS at FROM visits v
                        WHERE v.tenant_id = :t AND v.contact_id = :c AND NOT v.is_bot
                        ORDER BY v.occurred_at LIMIT 1)
                       UNION ALL
                       -- the anonymous visits of devices first identified as this contact: they are
                       -- this contact's history even before the merge has moved them
                       (SELECT {TOUCH_SQL} AS touch, v.occurred_at AS at FROM visits v
                        WHERE v.tenant_id = :t AND v.contact_id IS NULL AND NOT v.is_bot
                          AND v.visitor_id IN (SELECT e.visitor_id FROM identity_events e
                                               WHERE e.tenant_id = :t AND e.kind = 'linked' AND e.contact_id = :c)
                        ORDER BY v.occurred_at LIMIT 1)) candidates
                   ORDER BY at LIMIT 1),
             l AS (SELECT {TOUCH_SQL} AS touch, v.occurred_at AS at FROM visits v
                   WHERE v.tenant_id = :t AND v.contact_id = :c AND NOT v.is_bot AND {CAMPAIGN_SQL}
                   ORDER BY v.occurred_at DESC LIMIT 1),
             s AS (SELECT max(v.occurred_at) AS at FROM visits v WHERE v.tenant_id = :t AND v.contact_id = :c)
        UPDATE contacts c SET
            first_touch = coalesce(c.first_touch, (SELECT touch FROM f)),
            first_touch_at = CASE WHEN c.first_touch IS NULL THEN (SELECT at FROM f) ELSE c.first_touch_at END,
            last_touch = CASE WHEN c.last_touch_at IS NULL OR (SELECT at FROM l) > c.last_touch_at
                              THEN coalesce((SELECT touch FROM l), c.last_touch) ELSE c.last_touch END,
            last_touch_at = greatest(c.last_touch_at, (SELECT at FROM l)),
            last_seen_at = greatest(c.last_seen_at, (SELECT at FROM s))
        WHERE c.tenant_id = :t AND c.id = :c"""  # noqa: S608 - fixed SQL fragments, no input
)


def merge_contacts(session: Session, keep_id: UUID, other_id: UUID) -> Contact:
    """The tenant's explicit merge: everything of ``other`` moves to ``keep``; blank fields of ``keep``
    are filled from ``other``; ``other`` remains only as a record that points at ``keep``."""
    if keep_id == other_id:
        raise Invalid("a contact cannot be merged into itself", {"other_contact_id": "must differ"})
    keep, other = get_contact(session, keep_id), get_contact(session, other_id)
    if keep.merged_into is not None or other.merged_into is not None:
        raise Conflict("one of these contacts was already merged into another")
    if keep.erased_at is not None or other.erased_at is not None:
        raise Conflict("one of these contacts was erased")
    params = {"keep": keep_id, "other": other_id, "t": current_tenant_id(session)}
    for table in ("visitors", "visits", "form_submissions", "email_links", "link_clicks", "purchases", "conversions"):
        statement = f"UPDATE {table} SET contact_id = :keep WHERE tenant_id = :t AND contact_id = :other"  # noqa: S608
        session.execute(text(statement), params)
    for name in ("first_name", "last_name", "phone"):
        if not getattr(keep, name) and getattr(other, name):
            setattr(keep, name, getattr(other, name))
    keep.custom = {**other.custom, **keep.custom}
    if other.first_touch_at and (keep.first_touch_at is None or other.first_touch_at < keep.first_touch_at):
        keep.first_touch, keep.first_touch_at = other.first_touch, other.first_touch_at
    if other.last_touch_at and (keep.last_touch_at is None or other.last_touch_at > keep.last_touch_at):
        keep.last_touch, keep.last_touch_at = other.last_touch, other.last_touch_at
    keep.updated_at = utcnow()
    other.merged_into = keep_id
    other.updated_at = keep.updated_at
    session.add(keep)
    session.add(other)
    _event(session, "contacts_merged", contact_id=keep_id, previous_contact_id=other_id, evidence="tenant")
    session.flush()
    return keep


@dataclass(frozen=True)
class Resolution:
    level: Level
    visitor_id: UUID | None
    contact_id: UUID | None
    evidence: str | None


def resolve(session: Session, *, visitor_token: str | None, member_contact_id: UUID | None = None) -> Resolution:
    """The identification level of a request. ``member_contact_id`` is the contact of a valid
    membership session of this tenant (the memberships module checks the session), which makes it
    ``logged_in``; a genuine visitor token of a linked visitor makes it ``identified``."""
    visitor_id = None
    if visitor_token:
        claims = get_signer().verify(visitor_token, VISITOR_PURPOSE, current_tenant_id(session))
        visitor_id = claims.subject if claims else None
    visitor = session.get(Visitor, (current_tenant_id(session), visitor_id)) if visitor_id else None
    if member_contact_id is not None:
        return Resolution(Level.LOGGED_IN, visitor_id, member_contact_id, Evidence.LOGIN.value)
    if visitor is not None and visitor.contact_id is not None:
        return Resolution(Level.IDENTIFIED, visitor_id, visitor.contact_id, visitor.evidence)
    return Resolution(Level.ANONYMOUS, visitor_id, None, None)


TIMELINE_PAGE = 50
MAX_TIMELINE_PAGE = 500


@dataclass(frozen=True)
class TimelinePage:
    entries: list[dict[str, Any]]
    """Newest first."""
    next_cursor: str | None
    """``before`` for the next (older) page; None when this page reaches the beginning."""


def _timeline_cursor(at: datetime, row_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def _read_timeline_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        at, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        return datetime.fromisoformat(at), UUID(row_id)
    except ValueError:
        raise Invalid("the cursor is not one this API returned", {"before": "invalid"}) from None


def timeline(
    session: Session, contact_id: UUID, *, before: str | None = None, limit: int = TIMELINE_PAGE
) -> TimelinePage:
    """One page of everything known of a contact, newest first: visits from every device (marked before or
    after that device was identified), form submissions, link clicks, purchases, conversions (with their status
    per ad platform) and identity events. Each source is read
    as a range of its (tenant, contact, time) index, ``limit + 1`` rows at most, however long the history."""
    if not 1 <= limit <= MAX_TIMELINE_PAGE:
        raise Invalid("limit is out of range", {"limit": f"must be 1 to {MAX_TIMELINE_PAGE}"})
    get_contact(session, contact_id)
    bound = _read_timeline_cursor(before) if before else None
    fetch = limit + 1

    def older(at_column: Any, id_column: Any) -> list[Any]:
        return [tuple_(at_column, id_column) < tuple_(*bound)] if bound else []

    identified = {v.id: v.identified_at for v in session.exec(select(Visitor).where(Visitor.contact_id == contact_id))}
    keyed: list[tuple[datetime, UUID, dict[str, Any]]] = []
    visits = session.exec(
        select(Visit)
        .where(Visit.contact_id == contact_id, *older(col(Visit.occurred_at), col(Visit.hit_id)))
        .order_by(col(Visit.occurred_at).desc(), col(Visit.hit_id).desc())
        .limit(fetch)
    )
    for visit in visits:
        since = identified.get(visit.visitor_id)
        entry = {
            "at": visit.occurred_at,
            "kind": "visit",
            "visitor_id": visit.visitor_id,
            "url": visit.url,
            "title": visit.title,
            "type": visit.type,
            "event_name": visit.event_name,
            "utm": {k: v for k in ("source", "medium", "campaign") if (v := getattr(visit, f"utm_{k}"))},
            "identified": since is not None and visit.occurred_at >= since,
        }
        keyed.append((visit.occurred_at, visit.hit_id, entry))
    submissions = session.exec(
        select(FormSubmission)
        .where(FormSubmission.contact_id == contact_id, *older(col(FormSubmission.created_at), col(FormSubmission.id)))
        .order_by(col(FormSubmission.created_at).desc(), col(FormSubmission.id).desc())
        .limit(fetch)
    )
    for submission in submissions:
        entry = {
            "at": submission.created_at,
            "kind": "form_submission",
            "form_id": submission.form_id,
            "visitor_id": submission.visitor_id,
            "page_url": submission.page_url,
        }
        keyed.append((submission.created_at, submission.id, entry))
    clicks = session.exec(
        select(LinkClick)
        .where(LinkClick.contact_id == contact_id, *older(col(LinkClick.created_at), col(LinkClick.id)))
        .order_by(col(LinkClick.created_at).desc(), col(LinkClick.id).desc())
        .limit(fetch)
    )
    for click in clicks:
        entry = {
            "at": click.created_at,
            "kind": "link_click",
            "link_id": click.link_id,
            "visitor_id": click.visitor_id,
            "identifies": click.identifies,
            "reason": click.reason,
        }
        keyed.append((click.created_at, click.id, entry))
    purchases = session.exec(
        select(Purchase)
        .where(Purchase.contact_id == contact_id, *older(col(Purchase.occurred_at), col(Purchase.id)))
        .order_by(col(Purchase.occurred_at).desc(), col(Purchase.id).desc())
        .limit(fetch)
    )
    for purchase in purchases:
        entry = {
            "at": purchase.occurred_at,
            "kind": "purchase",
            "purchase_id": purchase.id,
            "visitor_id": purchase.visitor_id,
            "source": purchase.source,
            "external_id": purchase.external_id,
            "amount": purchase.amount,
            "currency": purchase.currency,
            "status": purchase.status,
            "refunded_amount": purchase.refunded_amount,
        }
        keyed.append((purchase.occurred_at, purchase.id, entry))
    conversions = list(
        session.exec(
            select(Conversion)
            .where(Conversion.contact_id == contact_id, *older(col(Conversion.occurred_at), col(Conversion.id)))
            .order_by(col(Conversion.occurred_at).desc(), col(Conversion.id).desc())
            .limit(fetch)
        )
    )
    statuses: dict[UUID, list[dict[str, Any]]] = {c.id: [] for c in conversions}
    if conversions:
        for delivery, platform in session.exec(
            select(ConversionDelivery, Integration.platform)
            .join(Integration, col(Integration.id) == col(ConversionDelivery.integration_id))
            .where(col(ConversionDelivery.conversion_id).in_(list(statuses)))
        ):
            statuses[delivery.conversion_id].append(
                {"platform": platform, "status": delivery.status, "reason": delivery.reason}
            )
    for conversion in conversions:
        entry = {
            "at": conversion.occurred_at,
            "kind": "conversion",
            "conversion_id": conversion.id,
            "visitor_id": conversion.visitor_id,
            "event_name": conversion.event_name,
            "event_id": conversion.event_id,
            "deliveries": statuses[conversion.id],
        }
        keyed.append((conversion.occurred_at, conversion.id, entry))
    # Events name the contact as the one linked or as the previous one: two index ranges, one each.
    seen_events: set[UUID] = set()
    for column in (col(IdentityEvent.contact_id), col(IdentityEvent.previous_contact_id)):
        events = session.exec(
            select(IdentityEvent)
            .where(column == contact_id, *older(col(IdentityEvent.created_at), col(IdentityEvent.id)))
            .order_by(col(IdentityEvent.created_at).desc(), col(IdentityEvent.id).desc())
            .limit(fetch)
        )
        for event in events:
            if event.id in seen_events:
                continue
            seen_events.add(event.id)
            entry = {
                "at": event.created_at,
                "kind": f"identity.{event.kind}",
                "visitor_id": event.visitor_id,
                "contact_id": event.contact_id,
                "previous_contact_id": event.previous_contact_id,
                "evidence": event.evidence,
                "detail": event.detail,
            }
            keyed.append((event.created_at, event.id, entry))
    keyed.sort(key=lambda item: (item[0], item[1]), reverse=True)
    page = keyed[:limit]
    next_cursor = _timeline_cursor(page[-1][0], page[-1][1]) if len(keyed) > limit else None
    return TimelinePage([entry for _, _, entry in page], next_cursor)
