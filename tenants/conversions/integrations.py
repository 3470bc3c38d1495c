"""The tenant's ad-platform integrations: where conversions go, which ones, and the tokens to send them with.

Secrets (Meta's and TikTok's access tokens, Google's refresh token) are sealed with the key ring of
``tenants.security.secrets``, bound to the tenant and the integration, and only ever read by the sender: no
function here returns them to a caller that answers a request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session, col, select

from tenants.cache import TTLCache
from tenants.errors import Invalid
from tenants.isolation import current_tenant_id, get_owned
from tenants.models import Integration, IntegrationStatus, Platform, Site, utcnow
from tenants.security.secrets import UndecryptableSecret, decrypt, encrypt

__all__ = [
    "CONVERSION_KINDS",
    "SECRET_FIELDS",
    "SETTING_FIELDS",
    "create_integration",
    "custom_event_names",
    "delete_integration",
    "get_integration",
    "list_integrations",
    "pause_integration",
    "secrets_of",
    "update_integration",
    "wants",
]

CONVERSION_KINDS = ("lead", "purchase", "complete_registration")
"""What converts besides the custom events a tenant names."""
SETTING_FIELDS: dict[Platform, tuple[str, ...]] = {
    Platform.META: ("pixel_id", "test_event_code"),
    Platform.TIKTOK: ("pixel_code", "test_event_code"),
    Platform.GOOGLE_ADS: ("customer_id", "login_customer_id", "conversion_actions"),
    Platform.LINKEDIN: ("conversion_actions",),
}
SECRET_FIELDS: dict[Platform, tuple[str, ...]] = {
    Platform.META: ("access_token",),
    Platform.TIKTOK: ("access_token",),
    Platform.GOOGLE_ADS: ("refresh_token",),
    Platform.LINKEDIN: ("access_token",),
}
REQUIRED: dict[Platform, tuple[str, ...]] = {
    Platform.META: ("pixel_id",),
    Platform.TIKTOK: ("pixel_code",),
    Platform.GOOGLE_ADS: ("customer_id",),
    Platform.LINKEDIN: (),
}
NOT_CONNECTED = "not connected: store the platform's token (or connect the Google Ads account)"
MAX_CUSTOM_EVENTS = 50

_PIXEL_ID = re.compile(r"[0-9]{5,25}")
_PIXEL_CODE = re.compile(r"[A-Za-z0-9]{8,40}")
_CUSTOMER_ID = re.compile(r"[0-9]{10}")
_ACTION_ID = re.compile(r"[0-9]{1,20}")
_TOKEN = re.compile(r"[\x21-\x7e]{8,2048}")
_TEST_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def _secret_context(integration: Integration) -> bytes:
    """Associated data: the ciphertext opens only as this tenant's secret of this integration."""
    return f"integration-secret:{integration.tenant_id}:{integration.id}".encode()


def _customer_id(value: Any) -> str | None:
    """Google shows customer ids as 123-456-7890; the API takes the ten digits."""
    digits = str(value).replace("-", "").strip() if isinstance(value, str) else None
    return digits if digits and _CUSTOMER_ID.fullmatch(digits) else None


def _matching(pattern: re.Pattern[str], problem: str) -> Callable[[Any], tuple[Any, str | None]]:
    def check(value: Any) -> tuple[Any, str | None]:
        if isinstance(value, str) and pattern.fullmatch(value.strip()):
            return value.strip(), None
        return None, problem

    return check


def _customer(value: Any) -> tuple[Any, str | None]:
    digits = _customer_id(value)
    return digits, None if digits else "must be a Google Ads customer id: ten digits, dashes allowed (123-456-7890)"


def _actions(value: Any) -> tuple[Any, str | None]:
    actions = {
        str(k): v.strip() for k, v in dict(value).items() if isinstance(v, str) and _ACTION_ID.fullmatch(v.strip())
    }
    bad = sorted(str(k) for k, v in dict(value).items() if v is not None and str(k) not in actions)
    return actions, f"{', '.join(bad)}: must be the conversion action's numeric id" if bad else None


_SETTING_CHECKS: dict[str, Callable[[Any], tuple[Any, str | None]]] = {
    "pixel_id": _matching(_PIXEL_ID, "must be the pixel's (dataset's) id: digits only"),
    "pixel_code": _matching(_PIXEL_CODE, "must be the TikTok pixel code: 8-40 letters and digits"),
    "customer_id": _customer,
    "login_customer_id": _customer,
    "test_event_code": _matching(_TEST_CODE, "must be the test event code the platform's events manager shows"),
    "conversion_actions": _actions,
}


def _checked_settings(given: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """Each given setting normalised (None clears it), or its problem in ``errors``."""
    settings: dict[str, Any] = {}
    for name, value in given.items():
        check = _SETTING_CHECKS.get(name)
        if check is None:  # another platform's setting: refused by _unknown
            continue
        if value is None:
            settings[name] = None
            continue
        settings[name], problem = check(value)
        if problem:
            errors[name] = problem
    return settings


def _checked_events(given: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    events: dict[str, Any] = {kind: bool(given.get(kind, True)) for kind in CONVERSION_KINDS}
    custom = [str(name).strip() for name in given.get("custom") or []]
    bad = [name for name in custom if not _EVENT_NAME.fullmatch(name)]
    if bad:
        errors["events.custom"] = f"event names are 1-100 letters, digits, _ . : or -; not {bad[0]!r}"
    elif len(custom) > MAX_CUSTOM_EVENTS:
        errors["events.custom"] = f"at most {MAX_CUSTOM_EVENTS} custom events"
    events["custom"] = sorted(set(custom))
    return events


def _checked_secrets(platform: Platform, given: Mapping[str, Any], errors: dict[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in given.items():
        if value is None:
            continue
        if not isinstance(value, str) or not _TOKEN.fullmatch(value.strip()):
            errors[name] = "must be the token the platform issued: 8-2048 printable characters, no spaces"
        else:
            values[name] = value.strip()
    return values


def _check_site(session: Session, site_id: UUID | None, errors: dict[str, str]) -> None:
    if site_id is not None and session.get(Site, (current_tenant_id(session), site_id)) is None:
        errors["site_id"] = "no site of this workspace has this id"


def _check_complete(integration: Integration, errors: dict[str, str]) -> None:
    for name in REQUIRED[integration.platform]:
        if not integration.settings.get(name) and name not in errors:
            errors[name] = f"is required for {integration.platform.value}"
    if integration.platform in (Platform.GOOGLE_ADS, Platform.LINKEDIN):
        actions = integration.settings.get("conversion_actions") or {}
        wanted = [k for k in CONVERSION_KINDS if integration.events.get(k)] + list(integration.events.get("custom", []))
        needs = (
            "Google Ads needs a conversion action"
            if integration.platform == Platform.GOOGLE_ADS
            else "LinkedIn needs a conversion rule"
        )
        for kind in wanted:
            if kind not in actions and f"conversion_actions.{kind}" not in errors:
                errors[f"conversion_actions.{kind}"] = (
                    f"{needs} for every conversion it receives: give its id, or turn this conversion off in events"
                )


def _unknown(platform: Platform, names: set[str], errors: dict[str, str]) -> None:
    for name in sorted(names - set(SETTING_FIELDS[platform]) - set(SECRET_FIELDS[platform])):
        errors[name] = f"is not a setting of {platform.value}"


def _seal(integration: Integration, tokens: Mapping[str, str]) -> None:
    merged = {**(secrets_of(integration) if integration.secret else {}), **tokens}
    integration.secret = encrypt(json.dumps(merged).encode(), _secret_context(integration))
    integration.secret_set_at = utcnow()


def _connected(integration: Integration) -> None:
    """A stored token reconnects: a pause for a missing or refused token ends with it."""
    if integration.secret is None:
        integration.status, integration.paused_reason = IntegrationStatus.PAUSED, NOT_CONNECTED
        integration.paused_at = utcnow()
    elif integration.status == IntegrationStatus.PAUSED:
        integration.status, integration.paused_reason, integration.paused_at = IntegrationStatus.ACTIVE, None, None


def create_integration(
    session: Session,
    platform: Platform,
    *,
    name: str | None = None,
    site_id: UUID | None = None,
    settings: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    events: Mapping[str, Any] | None = None,
) -> Integration:
    """A new destination; 422 with every field at fault. Without its token it starts paused."""
    errors: dict[str, str] = {}
    settings, secrets = dict(settings or {}), dict(secrets or {})
    _unknown(platform, {*settings, *secrets}, errors)
    integration = Integration(
        platform=platform,
        name=(name or "").strip()[:200] or _default_name(platform),
        site_id=site_id,
        settings={k: v for k, v in _checked_settings(settings, errors).items() if v is not None},
        events=_checked_events(events or {}, errors),
    )
    tokens = _checked_secrets(platform, secrets, errors)
    _check_site(session, site_id, errors)
    _check_complete(integration, errors)
    if errors:
        raise Invalid("the integration is invalid", errors)
    integration.tenant_id = current_tenant_id(session)
    if tokens:
        _seal(integration, tokens)
    _connected(integration)
    session.add(integration)
    session.flush()
    _CUSTOM_NAMES.forget(integration.tenant_id)
    return integration


def _default_name(platform: Platform) -> str:
    names = {Platform.META: "Meta", Platform.GOOGLE_ADS: "Google Ads", Platform.TIKTOK: "TikTok"}
    return names.get(platform, "LinkedIn")


def get_integration(session: Session, integration_id: UUID) -> Integration:
    return get_owned(session, Integration, integration_id, "integration")


def list_integrations(session: Session) -> list[Integration]:
    """Oldest first."""
    return list(session.exec(select(Integration).order_by(col(Integration.created_at), col(Integration.id))))


_NOT_GIVEN: Any = object()


def update_integration(
    session: Session,
    integration_id: UUID,
    *,
    name: str | None = None,
    site_id: UUID | None = _NOT_GIVEN,
    settings: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    events: Mapping[str, Any] | None = None,
) -> Integration:
    """Only what is given changes (``site_id=None``: every site). A new token replaces the old one and ends
    a pause; settings given as None are cleared."""
    integration = get_integration(session, integration_id)
    errors: dict[str, str] = {}
    settings, secrets = dict(settings or {}), dict(secrets or {})
    _unknown(integration.platform, {*settings, *secrets}, errors)
    if name is not None:
        if not name.strip():
            errors["name"] = "must not be blank"
        integration.name = name.strip()[:200]
    if site_id is not _NOT_GIVEN:
        _check_site(session, site_id, errors)
        integration.site_id = site_id
    if settings:
        merged = {**integration.settings, **_checked_settings(settings, errors)}
        integration.settings = {k: v for k, v in merged.items() if v is not None}
    if events is not None:
        integration.events = _checked_events({**integration.events, **events}, errors)
    tokens = _checked_secrets(integration.platform, secrets, errors)
    _check_complete(integration, errors)
    if errors:
        raise Invalid("the integration is invalid", errors)
    if tokens:
        _seal(integration, tokens)
        _connected(integration)
    integration.updated_at = utcnow()
    session.add(integration)
    session.flush()
    _CUSTOM_NAMES.forget(integration.tenant_id)
    return integration


def delete_integration(session: Session, integration_id: UUID) -> None:
    """Its queued deliveries go with it; conversions stay (other integrations may have them). Retractions it
    still owed are reported as not done, in their erase reports, before its rows go."""
    from tenants.conversions.retractions import abandon_retractions  # noqa: PLC0415 - it builds on this module

    integration = get_integration(session, integration_id)
    abandon_retractions(session, integration)
    session.delete(integration)
    session.flush()
    _CUSTOM_NAMES.forget(current_tenant_id(session))


def pause_integration(session: Session, integration: Integration, reason: str) -> None:
    """Stop sending until the tenant reconnects (the platform refused the token)."""
    integration.status = IntegrationStatus.PAUSED
    integration.paused_reason = reason[:500]
    integration.paused_at = utcnow()
    session.add(integration)


def secrets_of(integration: Integration) -> dict[str, str]:
    """The integration's tokens, for the sender only; {} when none is stored or the ring cannot open them."""
    if integration.secret is None:
        return {}
    try:
        return dict(json.loads(decrypt(integration.secret, _secret_context(integration))))
    except UndecryptableSecret:
        return {}


_CUSTOM_NAMES: TTLCache[UUID, frozenset[str]] = TTLCache(30)


def custom_event_names(session: Session) -> frozenset[str]:
    """The tracked event names some integration of the tenant converts: ingest asks per batch, so they are kept
    30 s per process, and forgotten at once when an integration of this process changes."""
    tenant_id = current_tenant_id(session)
    cached = _CUSTOM_NAMES.get(tenant_id)
    if isinstance(cached, frozenset):
        return cached
    rows = session.execute(text("SELECT DISTINCT jsonb_array_elements_text(events->'custom') FROM integrations"))
    names = frozenset(name for (name,) in rows)
    _CUSTOM_NAMES.put(tenant_id, names)
    return names


def wants(integration: Integration, kind: str, event_name: str | None = None) -> bool:
    """Whether this integration receives a conversion of ``kind`` (a custom one by its event name)."""
    if kind == "custom":
        return event_name in integration.events.get("custom", [])
    return bool(integration.events.get(kind, False))
