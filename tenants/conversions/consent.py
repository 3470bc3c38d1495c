"""Ad and analytics consent per browser, and the one rule that says whether a conversion may reach an ad platform.

A browser's choice comes from the site's consent banner (``trailmark('consent', {ads: true|false})``) or the
tenant's server (the API); a Global Privacy Control or Do Not Track header it sends with a form, a consent call
or a login is kept beside it. The rule (:func:`refusal`): a privacy signal on a site that honours it, a refusal,
or no answer on an ``opt_in`` site means nothing is sent, and the conversion's delivery says which.

Whose answer (:func:`consent_for`): consent is per browser.
- A conversion made in a browser (a form it sent, an event it tracked, a purchase reported with its visitor
  token) follows that browser alone: the contact's other browsers neither lift its no nor cancel its yes.
- A conversion reported without a browser (a purchase from the shop's server, a membership registration)
  follows the contact's browsers together: a GPC/DNT signal from any of them counts; otherwise the most recent
  explicit answer among them decides; a browser that never answered counts for nothing, so one yes on an
  ``opt_in`` site is enough until a later no.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session, col, select

from tenants.isolation import current_tenant_id
from tenants.models import ConsentSource, PrivacySignal, Site, Visitor, VisitorConsent, utcnow

__all__ = [
    "ADS_CONSENT_MODES",
    "analytics_consent_key",
    "consent_for",
    "consent_of",
    "privacy_signal_of",
    "record_privacy_signal",
    "refusal",
    "set_ads_consent",
    "set_analytics_consent",
]

ADS_CONSENT_MODES = ("opt_out", "opt_in")


def privacy_signal_of(headers: Mapping[str, str]) -> PrivacySignal | None:
    """GPC or DNT in a request's headers (lower-case names)."""
    if headers.get("sec-gpc", "").strip() == "1":
        return PrivacySignal.GPC
    if headers.get("dnt", "").strip() == "1":
        return PrivacySignal.DNT
    return None


def consent_of(session: Session, visitor_id: UUID) -> VisitorConsent | None:
    return session.get(VisitorConsent, (current_tenant_id(session), visitor_id))


def consent_for(session: Session, visitor_id: UUID | None, contact_id: UUID | None) -> VisitorConsent | None:
    """The answer a conversion follows: its browser's, when it was made in one (``visitor_id``); else the
    contact's browsers' together (a signal from any, the most recent explicit answer); None when nobody
    answered."""
    if visitor_id is not None:
        return consent_of(session, visitor_id)
    if contact_id is None:
        return None
    answers = list(
        session.exec(
            select(VisitorConsent)
            .join(
                Visitor,
                (col(Visitor.tenant_id) == col(VisitorConsent.tenant_id))
                & (col(Visitor.id) == col(VisitorConsent.visitor_id)),
            )
            .where(Visitor.contact_id == contact_id)
        )
    )
    if not answers:
        return None
    signalled = next((a for a in answers if a.privacy_signal), None)
    explicit = [a for a in answers if a.ads is not None and a.changed_at is not None]
    latest = max(explicit, key=lambda a: a.changed_at or utcnow()) if explicit else None
    return VisitorConsent(
        tenant_id=answers[0].tenant_id,
        visitor_id=(latest or answers[0]).visitor_id,
        ads=latest.ads if latest else None,
        source=latest.source if latest else None,
        changed_at=latest.changed_at if latest else None,
        privacy_signal=signalled.privacy_signal if signalled else None,
        privacy_signal_at=signalled.privacy_signal_at if signalled else None,
    )


def set_ads_consent(session: Session, visitor_id: UUID, ads: bool, source: ConsentSource) -> VisitorConsent:
    """Store the browser's choice; ``changed_at`` moves only when the answer changes (a banner that repeats
    the same answer on every page keeps the time it was first given)."""
    session.execute(
        text(
            """INSERT INTO visitor_consents (tenant_id, visitor_id, ads, source, changed_at)
               VALUES (:t, :v, :ads, :source, :now)
               ON CONFLICT (tenant_id, visitor_id) DO UPDATE SET
                   ads = excluded.ads, source = excluded.source, changed_at = excluded.changed_at
               WHERE visitor_consents.ads IS DISTINCT FROM excluded.ads"""
        ),
        {"t": current_tenant_id(session), "v": visitor_id, "ads": ads, "source": source.value, "now": utcnow()},
    )
    consent = consent_of(session, visitor_id)
    assert consent is not None
    session.refresh(consent)
    return consent


def analytics_consent_key(tenant_id: UUID, visitor_id: UUID) -> str:
    """Redis key mirroring a browser's analytics answer ("1" or "0"): collect reads it instead of PostgreSQL."""
    return f"consent:analytics:{tenant_id}:{visitor_id}"


def set_analytics_consent(session: Session, visitor_id: UUID, analytics: bool, source: ConsentSource) -> VisitorConsent:
    """Store the browser's analytics answer beside its ad consent; ``analytics_changed_at`` moves only when the
    answer changes. The caller mirrors it into Redis (:func:`analytics_consent_key`) once this commits."""
    session.execute(
        text(
            """INSERT INTO visitor_consents (tenant_id, visitor_id, analytics, analytics_source, analytics_changed_at)
               VALUES (:t, :v, :analytics, :source, :now)
               ON CONFLICT (tenant_id, visitor_id) DO UPDATE SET
                   analytics = excluded.analytics, analytics_source = excluded.analytics_source,
                   analytics_changed_at = excluded.analytics_changed_at
               WHERE visitor_consents.analytics IS DISTINCT FROM excluded.analytics"""
        ),
        {
            "t": current_tenant_id(session),
            "v": visitor_id,
            "analytics": analytics,
            "source": source.value,
            "now": utcnow(),
        },
    )
    consent = consent_of(session, visitor_id)
    assert consent is not None
    session.refresh(consent)
    return consent


def record_privacy_signal(session: Session, visitor_id: UUID, signal: PrivacySignal) -> None:
    """The browser sent GPC or DNT: remembered (with when), so its conversions are not sent where honoured."""
    session.execute(
        text(
            """INSERT INTO visitor_consents (tenant_id, visitor_id, privacy_signal, privacy_signal_at)
               VALUES (:t, :v, :signal, :now)
               ON CONFLICT (tenant_id, visitor_id) DO UPDATE SET
                   privacy_signal = excluded.privacy_signal, privacy_signal_at = excluded.privacy_signal_at"""
        ),
        {"t": current_tenant_id(session), "v": visitor_id, "signal": signal.value, "now": utcnow()},
    )


def refusal(site: Site | None, consent: VisitorConsent | None) -> str | None:
    """Why this browser's conversion must not reach an ad platform, or None when it may.

    ``site`` is where the conversion happened (None when unknown: a purchase reported by the shop's server for a
    browser seen on no site); GPC and DNT are then honoured, as every site does by default."""
    honours_signals = site is None or site.honor_dnt
    if consent is not None and consent.privacy_signal and honours_signals:
        signal = "Global Privacy Control" if consent.privacy_signal == PrivacySignal.GPC else "Do Not Track"
        return f"the browser sent {signal}, which the site honours"
    if consent is not None and consent.ads is False:
        return "the visitor refused ad consent"
    if site is not None and site.ads_consent == "opt_in" and (consent is None or consent.ads is not True):
        return "the site needs ad consent and the visitor has not given it"
    return None
