"""Referrals: the clicks ingest records, the referrers bound to a contact when it is identified, and the one
rule that says which partner a purchase credits.

A referral is *live* at a moment when its click is at most the program's ``cookie_window_days`` before it, to the
second (``at - window <= clicked_at <= at``). Binding follows Ontraport: a contact identified while a referral is
live gets it as last referrer; a contact that is new then also gets its first referrer, which never changes;
contacts created by import or the API get none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

import msgspec
from sqlalchemy import text
from sqlmodel import Session, col, select

from tenants.accounts.service import normalize_email
from tenants.errors import Invalid
from tenants.isolation import current_tenant_id
from tenants.models import (
    Contact,
    ContactReferrer,
    Partner,
    PartnerAccount,
    PartnerCode,
    PartnerStatus,
    Program,
    ReferralClick,
    ReferrerRule,
    Visitor,
)
from tenants.tracking.hits import Envelope

__all__ = [
    "Credit",
    "CreditSource",
    "CreditStatus",
    "bind_referrers",
    "is_approved_partner",
    "normalize_code",
    "record_referral_clicks",
    "referrer_for_purchase",
]

MAX_SID = 100
CODE_PATTERN = re.compile(r"^[a-z0-9-]{2,64}$")
"""Letters, digits and hyphens: safe in any URL and any checkout's coupon field (``@`` or ``.`` are not)."""


def normalize_code(code: str) -> str:
    """Codes are stored lower-case; a shopper may type one in capitals."""
    return code.strip().lower()


class _ClickRow(msgspec.Struct):
    hit_id: UUID
    occurred_ms: int
    visitor_id: UUID
    code: str
    sid: str | None
    ip: str | None


_encode = msgspec.json.Encoder().encode

# One statement per ingest batch: the hits that name a live code of an approved partner become clicks; the hit id
# is the key, so a replayed hit adds nothing.
_RECORD_CLICKS = text(
    """INSERT INTO referral_clicks (tenant_id, hit_id, occurred_at, visitor_id, partner_id, program_id, code_id,
           sid, ip)
       SELECT :tenant_id, r.hit_id, to_timestamp(r.occurred_ms / 1000.0), r.visitor_id, c.partner_id, p.program_id,
           c.id, r.sid, r.ip
       FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS r(hit_id uuid, occurred_ms bigint, visitor_id uuid, code text, sid text, ip inet)
           JOIN partner_codes c ON c.tenant_id = :tenant_id AND c.code = r.code AND c.active
           JOIN partners p ON p.tenant_id = :tenant_id AND p.id = c.partner_id AND p.status = 'approved'
       ON CONFLICT DO NOTHING
       RETURNING visitor_id, occurred_at"""
)
# The browsers of just-stored clicks that were identified after clicking: how their identification went.
_IDENTIFIED_AFTER_CLICK = text(
    """SELECT v.id, v.contact_id, v.identified_at, v.evidence,
           coalesce((SELECT (e.detail ->> 'new_contact')::boolean FROM identity_events e
                     WHERE e.tenant_id = v.tenant_id AND e.visitor_id = v.id AND e.contact_id = v.contact_id
                       AND e.kind IN ('linked', 'repointed')
                     ORDER BY e.created_at DESC LIMIT 1), false)
       FROM visitors v
       WHERE v.tenant_id = :tenant_id AND v.id = ANY(CAST(:visitors AS uuid[])) AND v.contact_id IS NOT NULL
         AND v.identified_at IS NOT NULL"""
)


def record_referral_clicks(session: Session, envelopes: list[Envelope]) -> None:
    """Record, in ingest's transaction, the referral clicks among these hits (bots never refer anyone)."""
    rows = [
        _ClickRow(
            hit.hit_id,
            hit.ts,
            envelope.visitor_id,
            normalize_code(hit.partner_code),
            (hit.partner_sid or "")[:MAX_SID] or None,
            envelope.ip,
        )
        for envelope in envelopes
        if envelope.bot_reason is None
        for hit in envelope.hits
        if hit.partner_code and CODE_PATTERN.match(normalize_code(hit.partner_code))
    ]
    if not rows:
        return
    tenant_id = envelopes[0].tenant_id
    stored = session.execute(_RECORD_CLICKS, {"tenant_id": tenant_id, "rows": _encode(rows).decode()}).all()
    earliest: dict[UUID, datetime] = {}
    for visitor_id, clicked_at in stored:
        earliest[visitor_id] = min(clicked_at, earliest.get(visitor_id, clicked_at))
    _bind_clicks_stored_late(session, tenant_id, earliest)


def _bind_clicks_stored_late(session: Session, tenant_id: UUID, earliest_click: dict[UUID, datetime]) -> None:
    """A browser that clicks a link and fills a form a second later is identified before ingest stores its click:
    bind that click now as the identification would have (at its time, new contact or not)."""
    if not earliest_click:
        return
    identified = session.execute(
        _IDENTIFIED_AFTER_CLICK, {"tenant_id": tenant_id, "visitors": list(earliest_click)}
    ).all()
    for visitor_id, contact_id, identified_at, evidence, new_contact in identified:
        if earliest_click[visitor_id] <= identified_at:
            bind_referrers(
                session,
                contact_id=contact_id,
                visitor_id=visitor_id,
                new_contact=bool(new_contact),
                evidence=evidence or "identification",
                now=identified_at,
            )


# The earliest and the latest live click per program on this browser (not the contact's own partner links).
_BIND = text(
    """WITH live AS (
           SELECT rc.program_id, rc.partner_id, rc.hit_id, rc.occurred_at, c.code, pg.cookie_window_days
           FROM referral_clicks rc
               JOIN programs pg ON pg.tenant_id = rc.tenant_id AND pg.id = rc.program_id
               JOIN partners p ON p.tenant_id = rc.tenant_id AND p.id = rc.partner_id AND p.status = 'approved'
               JOIN partner_codes c ON c.tenant_id = rc.tenant_id AND c.id = rc.code_id
           WHERE rc.tenant_id = :t AND rc.visitor_id = :v AND p.contact_id <> :c
             AND rc.occurred_at <= :now AND rc.occurred_at >= :now - make_interval(days => pg.cookie_window_days)),
       firsts AS (SELECT DISTINCT ON (program_id) * FROM live ORDER BY program_id, occurred_at, hit_id),
       lasts AS (SELECT DISTINCT ON (program_id) * FROM live ORDER BY program_id, occurred_at DESC, hit_id DESC),
       first_bound AS (
           INSERT INTO contact_referrers (tenant_id, contact_id, program_id, position, partner_id, click_hit_id,
               clicked_at, bound_at, reason)
           SELECT :t, :c, program_id, 'first', partner_id, hit_id, occurred_at, :now,
               'new contact identified by ' || :evidence || ' within ' || cookie_window_days
                   || ' days of a click on code ' || code
           FROM firsts WHERE CAST(:new_contact AS boolean)
           ON CONFLICT DO NOTHING)
       INSERT INTO contact_referrers (tenant_id, contact_id, program_id, position, partner_id, click_hit_id,
           clicked_at, bound_at, reason)
       SELECT :t, :c, program_id, 'last', partner_id, hit_id, occurred_at, :now,
           CASE WHEN CAST(:new_contact AS boolean) THEN 'new' ELSE 'existing' END || ' contact identified by '
               || :evidence || ' within ' || cookie_window_days || ' days of a click on code ' || code
       FROM lasts
       ON CONFLICT (tenant_id, contact_id, program_id, position) DO UPDATE SET
           partner_id = excluded.partner_id, click_hit_id = excluded.click_hit_id, clicked_at = excluded.clicked_at,
           bound_at = excluded.bound_at, reason = excluded.reason
       WHERE contact_referrers.clicked_at IS NULL OR excluded.clicked_at > contact_referrers.clicked_at"""
)


def bind_referrers(
    session: Session, *, contact_id: UUID, visitor_id: UUID, new_contact: bool, evidence: str, now: datetime
) -> None:
    """Bind the partners of this browser's live referrals to the contact it was just identified as: last referrer
    always, first referrer too when the contact is ``new_contact`` (made by this identification). One statement;
    nothing when no program has a live click here."""
    session.execute(
        _BIND,
        {
            "t": current_tenant_id(session),
            "v": visitor_id,
            "c": contact_id,
            "now": now,
            "evidence": evidence,
            "new_contact": new_contact,
        },
    )


class CreditSource(StrEnum):
    """Why a purchase went to its partner, strongest first."""

    EXPLICIT = "explicit"
    """The tenant's API call named the partner."""
    PROMO_CODE = "promo_code"
    REFERRAL = "referral"
    """A live click on the buyer's browser, or on another browser of the buyer's contact."""
    FIRST_REFERRER = "first_referrer"
    LAST_REFERRER = "last_referrer"


class CreditStatus(StrEnum):
    CREDITED = "credited"
    HELD = "held"
    """Credited, but for the tenant to review before any commission is payable (same device or address)."""
    REFUSED = "refused"
    """Self-referral: the buyer is the partner. Nobody else is credited instead."""


@dataclass(frozen=True)
class Credit:
    """The partner a purchase credits, and why (stored on the commission by the caller)."""

    partner_id: UUID
    program_id: UUID
    source: CreditSource
    status: CreditStatus
    reason: str
    click_hit_id: UUID | None = None
    clicked_at: datetime | None = None
    sid: str = ""
    """The SubID of the referral click that decided it ('' without one): the partners report splits money by it."""


@dataclass(frozen=True)
class _Candidate:
    partner: Partner
    source: CreditSource
    reason: str
    click: ReferralClick | None = None
    clicked_at: datetime | None = None
    sid: str = ""


def _window(program: Program) -> timedelta:
    return timedelta(days=program.cookie_window_days)


def _is_live(clicked_at: datetime, at: datetime, program: Program) -> bool:
    return at - _window(program) <= clicked_at <= at


def _approved(session: Session, partner_id: UUID) -> Partner | None:
    partner = session.get(Partner, (current_tenant_id(session), partner_id))
    return partner if partner is not None and partner.status == PartnerStatus.APPROVED else None


def is_approved_partner(session: Session, partner_id: UUID) -> bool:
    """Whether an order may name this partner explicitly."""
    return _approved(session, partner_id) is not None


def referrer_for_purchase(  # noqa: PLR0917 - the purchase crediting's agreed call: (session, buyer, order)
    session: Session,
    contact_id: UUID | None,
    visitor_id: UUID | None,
    at: datetime,
    promo_code: str | None,
    explicit_partner_id: UUID | None,
    *,
    program_id: UUID | None = None,
) -> Credit | None:
    """The partner a purchase at ``at`` credits: a partner named by the tenant's call > a promo code on the order >
    the buyer's live referral (the program's rule picks among several) > the contact's stored first or last
    referrer (by the rule), while live. A buyer with the partner's own email is refused (or held, as the program
    says); one on the partner's own device or address is held. ``program_id`` limits it to one program (the
    purchased product's); without it, the most recent referral's program decides."""
    candidate = (
        _explicit(session, explicit_partner_id, program_id)
        or _promo(session, promo_code, program_id)
        or _live_referral(session, contact_id, visitor_id, at, program_id)
        or _stored_referrer(session, contact_id, at, program_id)
    )
    return _reviewed(session, candidate, contact_id, visitor_id) if candidate else None


def _explicit(session: Session, partner_id: UUID | None, program_id: UUID | None) -> _Candidate | None:
    if partner_id is None:
        return None
    partner = _approved(session, partner_id)
    if partner is None or (program_id is not None and partner.program_id != program_id):
        raise Invalid("the partner named is not an approved partner of the program", {"partner_id": "not approved"})
    return _Candidate(partner, CreditSource.EXPLICIT, "named by the tenant")


def _promo(session: Session, promo_code: str | None, program_id: UUID | None) -> _Candidate | None:
    if not promo_code:
        return None
    code = normalize_code(promo_code)
    found = session.exec(select(PartnerCode).where(PartnerCode.code == code, col(PartnerCode.active))).first()
    partner = _approved(session, found.partner_id) if found else None
    if partner is None or (program_id is not None and partner.program_id != program_id):
        return None  # a coupon of the shop's own, not a partner's: the next rule decides
    return _Candidate(partner, CreditSource.PROMO_CODE, f"promo code {code} on the order")


def _programs(session: Session) -> dict[UUID, Program]:
    return {program.id: program for program in session.exec(select(Program))}


def _live_referral(
    session: Session, contact_id: UUID | None, visitor_id: UUID | None, at: datetime, program_id: UUID | None
) -> _Candidate | None:
    browsers = {visitor_id} if visitor_id else set()
    if contact_id is not None:
        browsers |= set(session.exec(select(Visitor.id).where(Visitor.contact_id == contact_id)))
    if not browsers:
        return None
    programs = _programs(session)
    longest = max((_window(p) for p in programs.values()), default=None)
    if longest is None:
        return None
    query = select(ReferralClick).where(
        col(ReferralClick.visitor_id).in_(browsers),
        col(ReferralClick.occurred_at) <= at,
        col(ReferralClick.occurred_at) >= at - longest,
    )
    if program_id is not None:
        query = query.where(ReferralClick.program_id == program_id)
    clicks = [
        click
        for click in session.exec(query.order_by(col(ReferralClick.occurred_at).desc()).limit(500))
        if _is_live(click.occurred_at, at, programs[click.program_id])
    ]
    if not clicks:
        return None
    program = programs[clicks[0].program_id]
    own = [click for click in clicks if click.program_id == program.id]
    for click in own if program.referrer_rule == ReferrerRule.LAST else reversed(own):
        partner = _approved(session, click.partner_id)
        if partner is not None:
            rule = "latest" if program.referrer_rule == ReferrerRule.LAST else "earliest"
            reason = f"the {rule} live click ({click.occurred_at.isoformat()}) within {program.cookie_window_days} days"
            return _Candidate(partner, CreditSource.REFERRAL, reason, click, click.occurred_at, click.sid or "")
    return None


def _stored_referrer(
    session: Session, contact_id: UUID | None, at: datetime, program_id: UUID | None
) -> _Candidate | None:
    if contact_id is None:
        return None
    programs = _programs(session)
    query = select(ContactReferrer).where(ContactReferrer.contact_id == contact_id)
    if program_id is not None:
        query = query.where(ContactReferrer.program_id == program_id)
    for bound in sorted(session.exec(query), key=lambda row: row.bound_at, reverse=True):
        program = programs[bound.program_id]
        if bound.position != program.referrer_rule or bound.clicked_at is None:
            continue
        if not _is_live(bound.clicked_at, at, program):
            continue
        partner = _approved(session, bound.partner_id)
        if partner is not None:
            source = CreditSource.FIRST_REFERRER if bound.position == "first" else CreditSource.LAST_REFERRER
            reason = f"the contact's {bound.position} referrer ({bound.reason})"
            click = (
                session.get(ReferralClick, (current_tenant_id(session), bound.click_hit_id))
                if bound.click_hit_id
                else None
            )
            sid = click.sid or "" if click is not None else ""
            return _Candidate(partner, source, reason, clicked_at=bound.clicked_at, sid=sid)
    return None


def _reviewed(session: Session, candidate: _Candidate, contact_id: UUID | None, visitor_id: UUID | None) -> Credit:
    """Self-referral refused (or held, per program); the partner's own device or address held for review."""
    tenant_id = current_tenant_id(session)
    partner = candidate.partner
    program = session.get(Program, (tenant_id, partner.program_id))
    assert program is not None
    status, reason = CreditStatus.CREDITED, candidate.reason
    buyer = session.get(Contact, (tenant_id, contact_id)) if contact_id else None
    own = session.get(Contact, (tenant_id, partner.contact_id))
    if buyer is not None and own is not None and _same_email(buyer.email, own.email):
        status = CreditStatus.REFUSED if program.self_referral == "refuse" else CreditStatus.HELD
        reason = f"self-referral: the buyer has the partner's email ({reason})"
    elif problem := _shared_device(session, partner, candidate.click, visitor_id):
        status, reason = CreditStatus.HELD, f"{problem} ({reason})"
    return Credit(
        partner_id=partner.id,
        program_id=partner.program_id,
        source=candidate.source,
        status=status,
        reason=reason,
        click_hit_id=candidate.click.hit_id if candidate.click else None,
        clicked_at=candidate.clicked_at,
        sid=candidate.sid,
    )


def _same_email(a: str, b: str) -> bool:
    return normalize_email(a).lower() == normalize_email(b).lower()


def _shared_device(
    session: Session, partner: Partner, click: ReferralClick | None, visitor_id: UUID | None
) -> str | None:
    """Why this purchase looks like the partner's own, or None."""
    devices = {v for v in (visitor_id, click.visitor_id if click else None) if v is not None}
    if devices:
        partners_device = session.exec(
            select(Visitor.id).where(col(Visitor.id).in_(devices), Visitor.contact_id == partner.contact_id)
        ).first()
        if partners_device is not None:
            return "same device as the partner"
    if click is not None and click.ip is not None:
        account = session.get(PartnerAccount, (current_tenant_id(session), partner.id))
        if account is not None and account.last_login_ip is not None and str(account.last_login_ip) == str(click.ip):
            return "same address as the partner's last login"
    return None
