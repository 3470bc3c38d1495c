"""Sites: where the tracker runs, which origins may send hits, and how they are treated."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlmodel import Session, col, select

from tenants.cache import Missing, TTLCache
from tenants.errors import Invalid
from tenants.isolation import get_owned, tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.models import DEFAULT_PARTNER_PARAMS, Site, Visit
from tenants.tracking.origins import normalize_origin
from tenants.tracking.visitors import VISITOR_COOKIE_MAX_AGE, visitor_cookie_max_age

__all__ = [
    "CONSENT_MODES",
    "SiteConfig",
    "cached_site",
    "create_site",
    "delete_site",
    "first_visit_at",
    "forget_site",
    "get_site",
    "list_sites",
    "resolve_site",
    "snippet",
    "update_site",
]

SITE_CACHE_SECONDS = 30.0
"""How long a process trusts its copy of a site's settings; changes apply everywhere within this."""


@dataclass(frozen=True)
class SiteConfig:
    """What the public endpoints need of a site, cached per process."""

    tenant_id: UUID
    site_id: UUID
    site_key: str
    allowed_origins: frozenset[str]
    honor_dnt: bool
    truncate_ip: bool
    partner_params: tuple[str, ...]
    bot_policy: str
    consent_mode: str = "none"
    cookie_max_age: int = VISITOR_COOKIE_MAX_AGE
    """The visitor cookie's lifetime, from the tenant's retention for anonymous visitors."""


CONSENT_MODES = ("none", "opt_in", "opt_out")


def _validated(
    name: str | None,
    allowed_origins: list[str] | None,
    partner_params: list[str] | None,
    bot_policy: str | None,
) -> dict[str, Any]:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if name is not None:
        if not 1 <= len(name.strip()) <= 200:
            errors["name"] = "must be 1 to 200 characters"
        values["name"] = name.strip()
    if allowed_origins is not None:
        origins = []
        for origin in allowed_origins:
            normalized = normalize_origin(origin)
            if normalized is None:
                errors["allowed_origins"] = f"{origin!r} is not an origin like https://shop.example.com"
                break
            origins.append(normalized)
        if not origins and "allowed_origins" not in errors:
            errors["allowed_origins"] = "list at least one origin the tracker runs on"
        values["allowed_origins"] = sorted(set(origins))
    if partner_params is not None:
        if not all(p and len(p) <= 50 and p.replace("_", "").replace("-", "").isalnum() for p in partner_params):
            errors["partner_params"] = "must be query parameter names (letters, digits, - and _)"
        values["partner_params"] = list(dict.fromkeys(partner_params))
    if bot_policy is not None:
        if bot_policy not in ("flag", "drop"):
            errors["bot_policy"] = "must be 'flag' or 'drop'"
        values["bot_policy"] = bot_policy
    if errors:
        raise Invalid("the site is invalid", errors)
    return values


def create_site(
    session: Session,
    *,
    name: str,
    allowed_origins: list[str],
    honor_dnt: bool = True,
    truncate_ip: bool = True,
    partner_params: list[str] | None = None,
    bot_policy: str = "flag",
    ads_consent: str = "opt_out",
    consent_mode: str = "none",
) -> Site:
    """Register a site; its public key goes into the snippet."""
    values = _validated(name, allowed_origins, partner_params or list(DEFAULT_PARTNER_PARAMS), bot_policy)
    _check_ads_consent(ads_consent)
    _check_consent_mode(consent_mode)
    site = Site(
        site_key=secrets.token_urlsafe(12),
        honor_dnt=honor_dnt,
        truncate_ip=truncate_ip,
        ads_consent=ads_consent,
        consent_mode=consent_mode,
        **values,
    )
    session.add(site)
    session.flush()
    return site


def _check_ads_consent(mode: str) -> None:
    if mode not in ("opt_out", "opt_in"):
        raise Invalid("the site is invalid", {"ads_consent": "must be 'opt_out' or 'opt_in'"})


def _check_consent_mode(mode: str) -> None:
    if mode not in CONSENT_MODES:
        raise Invalid("the site is invalid", {"consent_mode": "must be 'none', 'opt_in' or 'opt_out'"})


def list_sites(session: Session) -> list[Site]:
    return list(session.exec(select(Site).order_by(col(Site.id))))


def get_site(session: Session, site_id: UUID) -> Site:
    return get_owned(session, Site, site_id, "site")


def update_site(
    session: Session,
    site_id: UUID,
    *,
    name: str | None = None,
    allowed_origins: list[str] | None = None,
    honor_dnt: bool | None = None,
    truncate_ip: bool | None = None,
    partner_params: list[str] | None = None,
    bot_policy: str | None = None,
    ads_consent: str | None = None,
    consent_mode: str | None = None,
) -> Site:
    """Change what is given; the rest stays."""
    site = get_site(session, site_id)
    if consent_mode is not None:
        _check_consent_mode(consent_mode)
        site.consent_mode = consent_mode
    if ads_consent is not None:
        _check_ads_consent(ads_consent)
        site.ads_consent = ads_consent
    for field, value in _validated(name, allowed_origins, partner_params, bot_policy).items():
        setattr(site, field, value)
    if honor_dnt is not None:
        site.honor_dnt = honor_dnt
    if truncate_ip is not None:
        site.truncate_ip = truncate_ip
    session.add(site)
    session.flush()
    return site


def delete_site(session: Session, site_id: UUID) -> None:
    """Remove the site with its visitors and visits."""
    session.delete(get_site(session, site_id))


def first_visit_at(session: Session, site_id: UUID) -> datetime | None:
    """When a stored visit of the site happened, or None while the snippet has sent nothing that was kept.

    Any one visit answers "does the snippet work?"; ordering by time would scan the site's visits."""
    get_site(session, site_id)
    return session.exec(select(Visit.occurred_at).where(Visit.site_id == site_id).limit(1)).first()


def snippet(base_url: str, site: Site) -> str:
    return f'<script async src="{base_url}/t/{site.site_key}.js"></script>'


_sites: TTLCache[str, SiteConfig | None] = TTLCache(SITE_CACHE_SECONDS)


def cached_site(site_key: str) -> tuple[bool, SiteConfig | None]:
    """``(True, site or None)`` when this process's cache answers; ``(False, None)`` when only
    :func:`resolve_site` (which reads the database) can."""
    cached = _sites.get(site_key)
    return (False, None) if isinstance(cached, Missing) else (True, cached)


def resolve_site(site_key: str) -> SiteConfig | None:
    """The site behind a public key, or None; cached for :data:`SITE_CACHE_SECONDS` (misses too)."""
    cached = _sites.get(site_key)
    if not isinstance(cached, Missing):
        return cached
    return _sites.put(site_key, _load_site(site_key) if 0 < len(site_key) <= 32 else None)


def forget_site(site_key: str) -> None:
    """Drop this process's cached copy (after the tenant changed it here)."""
    _sites.forget(site_key)


def _load_site(site_key: str) -> SiteConfig | None:
    tenant_id = tenant_of_public_key("site", site_key)
    if tenant_id is None:
        return None
    with tenant_session(tenant_id) as session:
        site = session.exec(select(Site).where(Site.site_key == site_key)).first()
        if site is None:
            return None
        from tenants.privacy.retention import get_policy  # noqa: PLC0415 - privacy builds on tracking

        anonymous_months = get_policy(session).anonymous_visitor_months
        return SiteConfig(
            tenant_id=site.tenant_id,
            site_id=site.id,
            site_key=site.site_key,
            allowed_origins=frozenset(site.allowed_origins),
            honor_dnt=site.honor_dnt,
            truncate_ip=site.truncate_ip,
            partner_params=tuple(site.partner_params),
            bot_policy=site.bot_policy,
            consent_mode=site.consent_mode,
            cookie_max_age=visitor_cookie_max_age(anonymous_months),
        )
