"""What one partner brought, as the tenant sees it: its recent referral clicks and the contacts bound to it.

The portal shows the partner its own referrals through :mod:`tenants.partners.portal` (masked as the program
shares them, under partner scoping); the tenant sees its own contacts in full, so these read the tenant's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlmodel import Session, col, select

from tenants.models import Contact, ContactReferrer, PartnerCode, ReferralClick

__all__ = ["ReferralClickRow", "ReferredContact", "recent_clicks", "referred_contacts"]

MAX_ROWS = 200
"""A partner page shows the newest rows; the partners report counts them all."""


@dataclass(frozen=True)
class ReferralClickRow:
    occurred_at: datetime
    code: str
    sid: str | None
    visitor_id: UUID


@dataclass(frozen=True)
class ReferredContact:
    contact_id: UUID
    email: str
    name: str
    position: str
    """``first`` or ``last`` referrer."""
    bound_at: datetime
    reason: str


def recent_clicks(session: Session, partner_id: UUID, limit: int = 50) -> list[ReferralClickRow]:
    """The partner's newest referral clicks, with the code and SubID each came through."""
    rows = session.exec(
        select(ReferralClick, PartnerCode.code)
        .join(PartnerCode, col(PartnerCode.id) == col(ReferralClick.code_id))
        .where(ReferralClick.partner_id == partner_id)
        .order_by(col(ReferralClick.occurred_at).desc())
        .limit(min(limit, MAX_ROWS))
    ).all()
    return [ReferralClickRow(click.occurred_at, code, click.sid, click.visitor_id) for click, code in rows]


def referred_contacts(session: Session, partner_id: UUID, limit: int = 100) -> list[ReferredContact]:
    """The contacts bound to the partner as first or last referrer, newest binding first, with why."""
    rows = session.exec(
        select(ContactReferrer, Contact)
        .join(Contact, col(Contact.id) == col(ContactReferrer.contact_id))
        .where(ContactReferrer.partner_id == partner_id)
        .order_by(col(ContactReferrer.bound_at).desc())
        .limit(min(limit, MAX_ROWS))
    ).all()
    return [
        ReferredContact(
            contact.id,
            contact.email,
            " ".join(filter(None, [contact.first_name, contact.last_name])),
            bound.position,
            bound.bound_at,
            bound.reason,
        )
        for bound, contact in rows
    ]
