"""Which visitor a browser is: the signed visitor token, checked and (re)issued."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID

from tenants.models.base import uuid7
from tenants.security.tokens import get_signer

__all__ = [
    "VISITOR_COOKIE",
    "VISITOR_COOKIE_MAX_AGE",
    "VISITOR_PURPOSE",
    "BrowserVisitor",
    "visitor_cookie_max_age",
    "visitor_of_browser",
]

VISITOR_PURPOSE = "visitor"
VISITOR_COOKIE = "tm_vid"
VISITOR_COOKIE_MAX_AGE = 400 * 24 * 3600
"""Browsers cap cookie lifetimes at 400 days (Chrome since version 104; the draft RFC 6265bis limit)."""
DAYS_PER_MONTH = 30.4375


def visitor_cookie_max_age(anonymous_visitor_months: int) -> int:
    """Seconds the visitor cookie lives: as long as the tenant keeps an anonymous visitor (its retention
    policy), never longer than browsers allow."""
    return min(VISITOR_COOKIE_MAX_AGE, int(anonymous_visitor_months * DAYS_PER_MONTH) * 24 * 3600)


@dataclass(frozen=True)
class BrowserVisitor:
    visitor_id: UUID
    token: str
    """The token the browser should hold from now on."""
    is_new: bool
    reissued: bool
    """True when ``token`` differs from what the browser sent (new visitor or an older signing key)."""


def new_visitor_id(tenant_id: UUID, first_hit_id: UUID, first_hit_ts: int) -> UUID:
    """A new visitor's id, derived from its first hit: a batch re-sent because its answer was lost
    names the same visitor again instead of leaving an empty one behind. Time-ordered like
    :func:`new_id`; unguessable because the hit id is the browser's random secret."""
    return uuid7(first_hit_ts, hashlib.sha256(tenant_id.bytes + first_hit_id.bytes).digest())


def visitor_of_browser(tenant_id: UUID, *tokens: str | None, first_hit: tuple[UUID, int]) -> BrowserVisitor:
    """The visitor named by the first genuine token of this tenant among ``tokens`` (server cookie
    first, then what the script sent); a forged, foreign or other-purpose token is ignored and the
    browser becomes a new anonymous visitor, named after ``first_hit`` (id, time)."""
    signer = get_signer()
    for token in tokens:
        if not token:
            continue
        claims = signer.verify(token, VISITOR_PURPOSE, tenant_id)
        if claims is None:
            continue
        if signer.is_current(claims):
            return BrowserVisitor(claims.subject, token, is_new=False, reissued=False)
        fresh = signer.sign(VISITOR_PURPOSE, tenant_id, claims.subject)
        return BrowserVisitor(claims.subject, fresh, is_new=False, reissued=True)
    visitor_id = new_visitor_id(tenant_id, *first_hit)
    return BrowserVisitor(visitor_id, signer.sign(VISITOR_PURPOSE, tenant_id, visitor_id), is_new=True, reissued=True)
