"""Erasing a person (GDPR art. 17): a request (from the tenant, or from the member, which the tenant confirms),
then one worker transaction that deletes every row naming the person or their browsers in every table the
catalog shows, anonymises what the law makes the business keep, and stores a report without personal data.

What is kept, and how, is the short list in :data:`KEPT`; every other table that names a contact or a visitor is
deleted from, so a table added later is erased without a change here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col, select

from tenants.conversions.retractions import enqueue_sends, queue_retraction, state_of
from tenants.errors import Conflict, NotFound
from tenants.isolation import current_tenant_id, get_owned, tenant_session
from tenants.memberships.sessions import destroy_all_sessions
from tenants.models import (
    Contact,
    Conversion,
    ConversionRetraction,
    Erasure,
    ErasureStatus,
    IdentityEvent,
    Integration,
    Member,
    Partner,
    PartnerAccount,
    Purchase,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.privacy.catalog import PersonTable, person_tables
from tenants.privacy.person import QUOTED_BY_ADDRESS, Person, bound, find_person, like_patterns, person_statement

__all__ = [
    "ERASE_TASK",
    "KEPT",
    "confirm_erasure",
    "conversions_to_cancel_and_retract",
    "decline_erasure",
    "deletion_order",
    "erase_person",
    "get_erasure",
    "keep_rollups",
    "list_erasures",
    "member_asks_erasure",
    "member_open_erasure",
    "member_person",
    "open_erasure",
    "placeholder_email",
    "record_failure",
    "request_erasure",
    "request_member_erasure",
]

ERASE_TASK = "trailmark.privacy.erase_person"
PLACEHOLDER_DOMAIN = "erased.invalid"


def keep_rollups(session: Session) -> None:
    """The rest of this transaction leaves the rollups as they are (their triggers skip it, migration 0019):
    aggregate counts hold no personal data, and a report must not change because a person left."""
    # SET LOCAL, like the tenant binding (tenants.isolation): the statement form Citus forwards to its workers.
    session.execute(text("SET LOCAL app.keep_rollups = 'on'"))


def placeholder_email(contact_id: UUID) -> str:
    """The address an erased contact keeps: unique, undeliverable (RFC 2606), derived from nothing personal."""
    return f"erased-{contact_id.hex}@{PLACEHOLDER_DOMAIN}"


def _without_query(url: Any) -> Any:
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def anonymous_touch(touch: dict[str, Any] | None) -> dict[str, Any] | None:
    """A touch with what could single the person out removed (addresses' queries, click ids' values, ad
    cookies), and what reports count kept (UTMs, channel, host and path, the partner code)."""
    if not touch:
        return touch
    kept = dict(touch)
    kept["landing_page"] = _without_query(touch.get("landing_page"))
    kept["referrer"] = _without_query(touch.get("referrer"))
    kept["click_ids"] = {name: {"value": "erased"} for name in touch.get("click_ids") or {}}
    kept["ad_cookies"] = {}
    return kept


def _anonymise_contacts(session: Session, person: Person) -> int:
    now = utcnow()
    contacts = list(session.exec(select(Contact).where(col(Contact.id).in_(person.contact_ids))))
    for contact in contacts:
        contact.email = placeholder_email(contact.id)
        contact.first_name = contact.last_name = contact.phone = None
        contact.custom = {}
        contact.first_touch = anonymous_touch(contact.first_touch)
        contact.last_touch = anonymous_touch(contact.last_touch)
        contact.erased_at = contact.updated_at = now
    session.flush()
    return len(contacts)


def _anonymise_purchases(session: Session, person: Person) -> int:
    purchases = list(session.exec(select(Purchase).where(col(Purchase.contact_id).in_(person.contact_ids))))
    for purchase in purchases:
        purchase.visitor_id = None
        purchase.first_touch = anonymous_touch(purchase.first_touch)
        purchase.last_touch = anonymous_touch(purchase.last_touch)
    session.flush()
    return len(purchases)


def _anonymise_partners(session: Session, person: Person) -> int:
    """A partner keeps its commissions and payouts (bookkeeping); its payout address and portal login go."""
    partners = list(session.exec(select(Partner).where(col(Partner.contact_id).in_(person.contact_ids))))
    for partner in partners:
        partner.payout_email = None
        account = session.get(PartnerAccount, (partner.tenant_id, partner.id))
        if account is not None:
            session.delete(account)
    session.flush()
    return len(partners)


def _kept_as_is(_session: Session, _person: Person) -> int:
    return 0


KEPT: dict[str, Callable[[Session, Person], int]] = {
    "contacts": _anonymise_contacts,
    "purchases": _anonymise_purchases,
    "partners": _anonymise_partners,
    # Bookkeeping the law makes the business keep; they name the (now anonymous) contact and nothing else of it.
    "purchase_credits": _kept_as_is,
    "commissions": _kept_as_is,
    # The erasure's own record; identity events are scrubbed by trailmark_scrub_person (append-only).
    "erasures": _kept_as_is,
    "identity_events": _kept_as_is,
}
"""Tables whose rows about the person stay, each with what makes them anonymous; every other table is deleted
from."""


def deletion_order(tables: list[PersonTable]) -> list[PersonTable]:
    """Rows that refer to another table's rows go first, so no foreign key is left pointing at nothing."""
    remaining = list(tables)
    ordered: list[PersonTable] = []
    while remaining:
        leaves = [t for t in remaining if not any(t.name in other.references for other in remaining if other is not t)]
        if not leaves:  # a cycle (none today): break it in name order rather than loop forever
            leaves = [min(remaining, key=lambda t: t.name)]
        ordered += sorted(leaves, key=lambda t: t.name)
        remaining = [t for t in remaining if t not in leaves]
    return ordered


_PERSONS_DELIVERIES = text(
    """SELECT d.integration_id, d.conversion_id, d.status, d.reason, d.sent_at, c.ip IS NOT NULL,
              c.user_agent IS NOT NULL, k.email IS NOT NULL, k.phone IS NOT NULL, d.conversion_action,
              d.status = 'queued' AND d.lease_expires_at > now() AS in_flight
       FROM conversion_deliveries d
           JOIN conversions c ON c.tenant_id = d.tenant_id AND c.id = d.conversion_id
           LEFT JOIN contacts k ON k.tenant_id = c.tenant_id AND k.id = c.contact_id
       WHERE c.contact_id = ANY(CAST(:contacts AS uuid[])) OR c.visitor_id = ANY(CAST(:visitors AS uuid[]))
       ORDER BY d.sent_at NULLS LAST, c.occurred_at, d.integration_id
       FOR UPDATE OF d"""
)
"""Locked: a batch being claimed right now commits first. One claimed and in flight (leased, not yet recorded)
counts as received: the platform may have it, so it is listed (and retracted) rather than silently cancelled."""


def conversions_to_cancel_and_retract(
    session: Session, person: Person, erasure_id: UUID
) -> tuple[dict[str, Any], list[ConversionRetraction]]:
    """What erasing does to the person's conversions (the report's ``conversions``): queued ones are cancelled
    (their rows are deleted with the rest, before any is sent); each one a platform received is listed with the
    platform, when, and which identifiers went (names only, no values). Google Ads can withdraw one (a RETRACTION
    adjustment): its retraction is queued (:mod:`tenants.conversions.retractions`) and listed under
    ``not_retracted`` until the sender moves it to ``retracted``; Meta and TikTok cannot, and theirs are listed
    under ``not_retractable``. It runs before any row is deleted."""
    cancelled, not_retractable, not_retracted, queued = 0, [], [], []
    rows = session.execute(
        _PERSONS_DELIVERIES, {"contacts": list(person.contact_ids), "visitors": list(person.visitor_ids)}
    ).all()
    tenant_id = current_tenant_id(session)
    for integration_id, conversion_id, status, reason, sent_at, ip, agent, email, phone, action, in_flight in rows:
        if status == "queued" and not in_flight:
            cancelled += 1
            continue
        if status not in ("sent", "queued"):
            continue  # failed or skipped: nothing reached the platform
        integration = session.get(Integration, (tenant_id, integration_id))
        conversion = session.get(Conversion, (tenant_id, conversion_id))
        assert integration is not None and conversion is not None  # the row lock holds both (foreign keys)
        platform = str(integration.platform)
        touch = (conversion.touches or {}).get(platform) or {}
        identifiers = sorted(
            {*(touch.get("click_ids") or {}), *(touch.get("ad_cookies") or {})}
            | {name for name, present in (("ip", ip), ("user_agent", agent), ("email_sha256", email),
                                          ("phone_sha256", phone)) if present}
        )  # fmt: skip
        entry: dict[str, Any] = {
            "platform": platform,
            "integration_id": str(integration_id),
            "conversion": str(conversion.kind) if conversion.kind != "custom" else f"custom: {conversion.event_name}",
            "occurred_at": conversion.occurred_at.isoformat(),
            "sent_at": sent_at.isoformat() if sent_at else None,
            "identifiers_sent": identifiers,
        }
        if reason and "CLICK_NOT_FOUND" in reason:  # Google answered that it attributes no such click
            not_retractable.append(entry | {"why": "Google Ads kept no conversion for it (CLICK_NOT_FOUND)"})
            continue
        retraction = queue_retraction(session, erasure_id, integration, conversion, action)
        if isinstance(retraction, str):
            not_retractable.append(entry | {"why": retraction})
            continue
        queued.append(retraction)
        not_retracted.append(entry | {"retraction_id": str(retraction.id)} | state_of(retraction, integration))
    report = {
        "cancelled": cancelled,
        "retracted": [],
        "not_retracted": not_retracted,
        "not_retractable": not_retractable,
    }
    return report, queued


_SCRUB_STRIPE_EVENTS = """UPDATE stripe_events SET payload = jsonb_build_object('id', id, 'type', type, 'erased', true),
        processed_at = coalesce(processed_at, now()),
        outcome = coalesce(outcome, 'ignored: its buyer was erased before it was processed')
    WHERE lower(payload::text) LIKE ANY(:patterns)"""


def _scrub_quoting_tables(session: Session, person: Person) -> dict[str, int]:
    """Rows that quote the person by address (Stripe's events: the buyer's email, name, phone) keep only what
    names the row. An event still unprocessed is closed too, or processing it would bring the person back."""
    assert set(QUOTED_BY_ADDRESS) == {"stripe_events"}, "a new table that quotes people needs its scrub here"
    if not person.addresses:
        return {}
    result = session.execute(bound(_SCRUB_STRIPE_EVENTS), {"patterns": like_patterns(person.addresses)})
    scrubbed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return {"stripe_events": scrubbed} if scrubbed else {}


def _cancel_queued_tasks(session: Session, person: Person, terms: list[str]) -> int:
    """Tasks not yet handed to the broker that would act on the person (a merge, a mail to them)."""
    needles = [str(i) for i in (*person.contact_ids, *person.visitor_ids)] + terms
    patterns = like_patterns(needles)
    result = session.execute(
        text("DELETE FROM outbox WHERE lower(args::text) LIKE ANY(:patterns)").bindparams(
            bindparam("patterns", type_=ARRAY(Text))
        ),
        {"patterns": patterns},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def erase_person(session: Session, erasure_id: UUID) -> Erasure | None:
    """Carry out a confirmed erasure in this one transaction, and store its report. Idempotent: a re-delivered
    task finds it done (or gone, with its tenant) and does nothing."""
    erasure = session.get(Erasure, (current_tenant_id(session), erasure_id), with_for_update=True)
    if erasure is None or erasure.status != ErasureStatus.QUEUED:
        return erasure
    keep_rollups(session)
    person = find_person(session, erasure.contact_id)
    contacts = list(session.exec(select(Contact).where(col(Contact.id).in_(person.contact_ids))))
    terms = sorted(
        {
            value.strip().lower()
            for c in contacts
            for value in (c.email, c.phone, c.first_name, c.last_name)
            if value and value.strip()
        }
    )
    members = list(session.exec(select(Member.id).where(col(Member.contact_id).in_(person.contact_ids))))
    params = {"contacts": list(person.contact_ids), "visitors": list(person.visitor_ids), "terms": terms}

    tables = person_tables(session)
    kept: dict[str, int] = {}
    anonymised: dict[str, int] = {}
    for table in tables:
        if table.name in KEPT:
            count = session.execute(
                bound(
                    person_statement("SELECT count(*) FROM", table.name, table.contact_columns, table.visitor_columns)
                ),
                params,
            ).scalar_one()
            if count:
                kept[table.name] = int(count)
    conversions, retractions = conversions_to_cancel_and_retract(session, person, erasure.id)
    cancelled_tasks = _cancel_queued_tasks(session, person, terms)
    enqueue_sends(session, retractions)  # after the cancel, whose patterns could match its arguments
    scrubbed = session.execute(
        bound("SELECT trailmark_scrub_person(:contacts, :visitors, :terms)"), params
    ).scalar_one()
    if scrubbed:
        anonymised["identity_events_and_audit_log"] = int(scrubbed)
    for name, anonymise in KEPT.items():
        if name != "contacts" and (count := anonymise(session, person)):
            anonymised[name] = count
    anonymised.update(_scrub_quoting_tables(session, person))

    deleted: dict[str, int] = {}
    for table in deletion_order([t for t in tables if t.name not in KEPT]):
        result = session.execute(
            bound(person_statement("DELETE FROM", table.name, table.contact_columns, table.visitor_columns)),
            params,
        )
        if result.rowcount:  # type: ignore[attr-defined]
            deleted[table.name] = int(result.rowcount)  # type: ignore[attr-defined]
    anonymised["contacts"] = _anonymise_contacts(session, person)

    sessions_ended = sum(destroy_all_sessions(erasure.tenant_id, member_id) for member_id in members)
    now = utcnow()
    session.add(IdentityEvent(kind="erased", contact_id=erasure.contact_id, detail={"erasure_id": str(erasure.id)}))
    erasure.status = ErasureStatus.DONE
    erasure.finished_at = now
    erasure.report = {
        "erasure_id": str(erasure.id),
        "contact_id": str(erasure.contact_id),
        "requested_via": erasure.requested_via,
        "requested_by": erasure.requested_by,
        "requested_at": erasure.requested_at.isoformat(),
        "confirmed_by": erasure.confirmed_by,
        "confirmed_at": erasure.confirmed_at.isoformat() if erasure.confirmed_at else None,
        "finished_at": now.isoformat(),
        "devices": len(person.visitor_ids),
        "merged_contacts": len(person.contact_ids) - 1,
        "deleted": deleted,
        "anonymised": anonymised,
        "kept": kept,
        "kept_because": "Purchases, credits and commissions are bookkeeping records the business must keep; "
        "they now name an anonymous placeholder",
        "sessions_ended": sessions_ended,
        "queued_tasks_cancelled": cancelled_tasks,
        "conversions": conversions,
    }
    session.flush()
    return erasure


def record_failure(tenant_id: UUID, erasure_id: UUID, error: BaseException) -> None:
    """Mark a queued erasure failed, in its own transaction (the erase itself rolled back). Only the error's
    kind is kept: its message could quote a value of the person."""
    with tenant_session(tenant_id) as session:
        erasure = session.get(Erasure, (tenant_id, erasure_id), with_for_update=True)
        if erasure is None or erasure.status != ErasureStatus.QUEUED:
            return
        erasure.status = ErasureStatus.FAILED
        erasure.finished_at = utcnow()
        erasure.report = {"erasure_id": str(erasure_id), "failed": type(error).__name__}


def open_erasure(session: Session, contact_id: UUID) -> Erasure | None:
    """The contact's erasure awaiting confirmation or queued, if any."""
    return session.exec(
        select(Erasure).where(
            Erasure.contact_id == contact_id,
            col(Erasure.status).in_([ErasureStatus.AWAITING_CONFIRMATION, ErasureStatus.QUEUED]),
        )
    ).first()


def _erasable(session: Session, contact_id: UUID) -> Contact:
    # Locked, so two requests for one person at once make one erasure: the second sees the first's.
    contact = session.get(Contact, (current_tenant_id(session), contact_id), with_for_update=True)
    if contact is None:
        raise NotFound("contact not found")
    if contact.erased_at is not None:
        raise Conflict("this contact was erased already")
    if contact.merged_into is not None:
        raise Conflict("this contact was merged into another: erase that one, which erases this one too")
    return contact


def _queue(session: Session, erasure: Erasure, confirmed_by: str) -> Erasure:
    erasure.status = ErasureStatus.QUEUED
    erasure.confirmed_by = confirmed_by
    erasure.confirmed_at = utcnow()
    session.flush()
    outbox.enqueue(session, ERASE_TASK, str(erasure.id))
    return erasure


def request_erasure(session: Session, contact_id: UUID, *, via: str, requested_by: str) -> Erasure:
    """The tenant's request: queued at once for the worker. A request already open for the contact is the one
    returned (a member's is confirmed by this)."""
    _erasable(session, contact_id)
    existing = open_erasure(session, contact_id)
    if existing is not None:
        if existing.status == ErasureStatus.AWAITING_CONFIRMATION:
            return _queue(session, existing, requested_by)
        return existing
    erasure = Erasure(contact_id=contact_id, status=ErasureStatus.QUEUED, requested_via=via, requested_by=requested_by)
    session.add(erasure)
    return _queue(session, erasure, requested_by)


def request_member_erasure(session: Session, member_id: UUID) -> Erasure:
    """A member's own request from their account page: it waits for the tenant to confirm it."""
    member = get_owned(session, Member, member_id, "member")
    _erasable(session, member.contact_id)
    existing = open_erasure(session, member.contact_id)
    if existing is not None:
        return existing
    erasure = Erasure(
        contact_id=member.contact_id,
        status=ErasureStatus.AWAITING_CONFIRMATION,
        requested_via="member",
        requested_by=f"member:{member.id}",
    )
    session.add(erasure)
    session.flush()
    return erasure


def member_asks_erasure(tenant_id: UUID, member_id: UUID) -> Erasure:
    """:func:`request_member_erasure` in its own transaction (the account page's button)."""
    with tenant_session(tenant_id) as session:
        return request_member_erasure(session, member_id)


def member_person(tenant_id: UUID, contact_id: UUID) -> Person:
    """The logged-in member's person (NotFound if the contact is gone), before their export is streamed."""
    with tenant_session(tenant_id) as session:
        return find_person(session, contact_id)


def member_open_erasure(tenant_id: UUID, contact_id: UUID) -> Erasure | None:
    """The member's open request, shown on their account page."""
    with tenant_session(tenant_id) as session:
        return open_erasure(session, contact_id)


def get_erasure(session: Session, erasure_id: UUID) -> Erasure:
    return get_owned(session, Erasure, erasure_id, "erasure")


def _awaiting(session: Session, erasure_id: UUID) -> Erasure:
    erasure = get_erasure(session, erasure_id)
    if erasure.status != ErasureStatus.AWAITING_CONFIRMATION:
        raise Conflict(f"this erasure is {erasure.status.replace('_', ' ')}, not awaiting confirmation")
    return erasure


def confirm_erasure(session: Session, erasure_id: UUID, *, confirmed_by: str) -> Erasure:
    """The tenant confirms a member's request: it is queued for the worker."""
    erasure = _awaiting(session, erasure_id)
    _erasable(session, erasure.contact_id)
    return _queue(session, erasure, confirmed_by)


def decline_erasure(session: Session, erasure_id: UUID, *, declined_by: str) -> Erasure:
    """The tenant declines a member's request (art. 17(3): a legal reason to keep the data); nothing is erased."""
    erasure = _awaiting(session, erasure_id)
    erasure.status = ErasureStatus.DECLINED
    erasure.confirmed_by = declined_by
    erasure.confirmed_at = erasure.finished_at = utcnow()
    session.flush()
    return erasure


def list_erasures(
    session: Session, *, status: ErasureStatus | None = None, contact_id: UUID | None = None, limit: int = 50
) -> list[Erasure]:
    """Newest first."""
    query = select(Erasure).order_by(col(Erasure.requested_at).desc(), col(Erasure.id).desc()).limit(limit)
    if status is not None:
        query = query.where(Erasure.status == status)
    if contact_id is not None:
        query = query.where(Erasure.contact_id == contact_id)
    return list(session.exec(query))
