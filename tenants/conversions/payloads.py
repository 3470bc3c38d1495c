"""One conversion as each platform's API takes it (``specs/ad-platforms.md``): Meta's event, Google's click
conversion, TikTok's event, LinkedIn's conversion event. Pure functions of the stored conversion, the contact
and the integration, so a retry sends exactly what the first attempt sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tenants.conversions import hashing
from tenants.models import Contact, Conversion, ConversionKind, Integration, Platform, VisitorConsent
from tenants.purchases.currencies import minor_unit_digits

__all__ = [
    "Built",
    "Unsendable",
    "build",
    "google_click_id",
    "google_clicked_at",
    "google_conversion_action",
    "google_conversion_time",
    "google_time",
    "meta_fbc",
]

META_EVENTS = {
    ConversionKind.LEAD: "Lead",
    ConversionKind.PURCHASE: "Purchase",
    ConversionKind.COMPLETE_REGISTRATION: "CompleteRegistration",
}
TIKTOK_EVENTS = {
    ConversionKind.LEAD: "SubmitForm",
    ConversionKind.PURCHASE: "CompletePayment",
    ConversionKind.COMPLETE_REGISTRATION: "CompleteRegistration",
}
GOOGLE_CLICK_IDS = ("gclid", "gbraid", "wbraid")
"""Google takes exactly one; a gclid (a click on any device) is preferred over the iOS app-to-web ids."""


@dataclass(frozen=True)
class Built:
    payload: dict[str, Any]
    """One event (Meta, TikTok) or click conversion (Google), as it goes into the batch."""
    identifiers: dict[str, bool] = field(default_factory=dict)
    """Which identifiers it carries, for the logs (never their values)."""


@dataclass(frozen=True)
class Unsendable:
    reason: str


def _value(conversion: Conversion) -> float | None:
    if conversion.value is None or not conversion.currency:
        return None
    return conversion.value / 10 ** minor_unit_digits(conversion.currency)


def meta_fbc(touch: dict[str, Any] | None) -> str | None:
    """The ``_fbc`` cookie as stored, else built from the fbclid and when it was first seen, in milliseconds
    (``fb.1.<ms>.<fbclid>``: subdomain index 1 when built on the server). The fbclid is kept byte for byte."""
    if not touch:
        return None
    cookie = touch.get("ad_cookies", {}).get("_fbc")
    if cookie:
        return str(cookie)
    fbclid = touch.get("click_ids", {}).get("fbclid")
    seen = touch.get("clicked_at", {}).get("fbclid")
    if not fbclid or not seen:
        return None
    millis = int(datetime.fromisoformat(seen).timestamp() * 1000)
    return f"fb.1.{millis}.{fbclid}"


def google_time(moment: datetime) -> str:
    """``yyyy-mm-dd hh:mm:ss+hh:mm``, the format Google Ads takes (given in UTC, so the offset is +00:00)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def _meta(conversion: Conversion, contact: Contact | None, integration: Integration) -> Built | Unsendable:
    touch = conversion.touches.get(Platform.META.value)
    user: dict[str, Any] = {}
    if contact is not None:
        hashed = {
            "em": hashing.sha256(hashing.meta_email(contact.email)),
            "ph": hashing.sha256(hashing.meta_phone(contact.phone)),
            "fn": hashing.sha256(hashing.meta_name(contact.first_name)),
            "ln": hashing.sha256(hashing.meta_name(contact.last_name)),
            "external_id": hashing.sha256(str(contact.id)),
        }
        user.update({k: [v] for k, v in hashed.items() if v})
    if conversion.ip:
        user["client_ip_address"] = str(conversion.ip)
    if conversion.user_agent:
        user["client_user_agent"] = conversion.user_agent
    if fbc := meta_fbc(touch):
        user["fbc"] = fbc
    if touch and (fbp := touch.get("ad_cookies", {}).get("_fbp")):
        user["fbp"] = fbp  # only ever the browser's own cookie: never invented
    if not user:
        return Unsendable("nothing Meta can match: no contact, click id, cookie or browser")
    # A website event needs its page and the browser's user agent; without a browser visit it is the server's.
    website = bool(conversion.page_url and conversion.user_agent)
    event: dict[str, Any] = {
        "event_name": META_EVENTS.get(conversion.kind, conversion.event_name),
        "event_time": int(conversion.occurred_at.timestamp()),
        "event_id": conversion.event_id,
        "action_source": "website" if website else "system_generated",
        "user_data": user,
    }
    if website:
        event["event_source_url"] = conversion.page_url
    custom: dict[str, Any] = {}
    if (value := _value(conversion)) is not None:
        custom.update(value=value, currency=str(conversion.currency).upper())
    if conversion.order_id:
        custom["order_id"] = conversion.order_id
    if conversion.items:
        minor = 10 ** minor_unit_digits(conversion.currency or "USD")
        custom["contents"] = [
            {"id": i["product"], "quantity": i.get("quantity", 1), "item_price": i.get("unit_amount", 0) / minor}
            for i in conversion.items
        ]
    if custom:
        event["custom_data"] = custom
    return Built(event, {k: k in user for k in ("em", "ph", "fn", "ln", "fbc", "fbp", "client_ip_address")})


def google_clicked_at(conversion: Conversion) -> datetime | None:
    """When the Google click id the conversion is sent with was first seen: Google's window runs from it."""
    touch = conversion.touches.get(Platform.GOOGLE_ADS.value) or {}
    click_ids = touch.get("click_ids", {})
    chosen = next((name for name in GOOGLE_CLICK_IDS if click_ids.get(name)), None)
    clicked = touch.get("clicked_at", {}).get(chosen) if chosen else None
    return datetime.fromisoformat(clicked) if clicked else None


def google_click_id(conversion: Conversion) -> str | None:
    """Which Google click id the conversion goes with (its name), or None when it has none."""
    click_ids = (conversion.touches.get(Platform.GOOGLE_ADS.value) or {}).get("click_ids", {})
    return next((name for name in GOOGLE_CLICK_IDS if click_ids.get(name)), None)


def google_conversion_time(conversion: Conversion) -> datetime:
    """The conversion's ``conversionDateTime`` at Google: when it happened, or a second after its click when
    the clocks put it earlier (Google refuses a conversion dated before its click)."""
    at = conversion.occurred_at
    if (click_time := google_clicked_at(conversion)) is not None and at <= click_time:
        at = click_time + timedelta(seconds=1)
    return at


def google_conversion_action(conversion: Conversion, integration: Integration) -> str | None:
    """The resource name of the integration's conversion action for this conversion, or None."""
    actions = integration.settings.get("conversion_actions") or {}
    key = conversion.event_name if conversion.kind == ConversionKind.CUSTOM else str(conversion.kind)
    action = actions.get(key)
    return f"customers/{integration.settings['customer_id']}/conversionActions/{action}" if action else None


def _google(
    conversion: Conversion, contact: Contact | None, integration: Integration, consent: VisitorConsent | None
) -> Built | Unsendable:
    touch = conversion.touches.get(Platform.GOOGLE_ADS.value) or {}
    click_ids = touch.get("click_ids", {})
    chosen = google_click_id(conversion)
    if chosen is None:
        return Unsendable("no Google click id (gclid, gbraid or wbraid) on any of the contact's visits")
    action = google_conversion_action(conversion, integration)
    if action is None:
        key = conversion.event_name if conversion.kind == ConversionKind.CUSTOM else str(conversion.kind)
        return Unsendable(f"the integration has no conversion action for {key}")
    click: dict[str, Any] = {
        "conversionAction": action,
        chosen: click_ids[chosen],
        "conversionDateTime": google_time(google_conversion_time(conversion)),
        "orderId": conversion.event_id,
        # GRANTED only for an explicit yes; where the site asks for none, Google is told it is unspecified.
        "consent": {"adUserData": "GRANTED" if consent is not None and consent.ads is True else "UNSPECIFIED"},
    }
    if (value := _value(conversion)) is not None:
        click.update(conversionValue=value, currencyCode=str(conversion.currency).upper())
    identifiers = []
    if contact is not None:
        if email := hashing.sha256(hashing.google_email(contact.email)):
            identifiers.append({"hashedEmail": email})
        if phone := hashing.sha256(hashing.google_phone(contact.phone)):
            identifiers.append({"hashedPhoneNumber": phone})
    if identifiers:
        click["userIdentifiers"] = identifiers[:5]
    present = {chosen: True, "hashedEmail": any("hashedEmail" in i for i in identifiers)}
    return Built(click, present | {"hashedPhoneNumber": any("hashedPhoneNumber" in i for i in identifiers)})


def _tiktok(conversion: Conversion, contact: Contact | None) -> Built | Unsendable:
    touch = conversion.touches.get(Platform.TIKTOK.value) or {}
    user: dict[str, Any] = {}
    if ttclid := touch.get("click_ids", {}).get("ttclid"):
        user["ttclid"] = ttclid
    if ttp := touch.get("ad_cookies", {}).get("_ttp"):
        user["ttp"] = ttp
    if contact is not None:
        hashed = {
            "email": hashing.sha256(hashing.meta_email(contact.email)),
            "phone": hashing.sha256(hashing.google_phone(contact.phone)),
            "external_id": hashing.sha256(str(contact.id)),
        }
        user.update({k: v for k, v in hashed.items() if v})
    if conversion.ip:
        user["ip"] = str(conversion.ip)
    if conversion.user_agent:
        user["user_agent"] = conversion.user_agent
    if not user:
        return Unsendable("nothing TikTok can match: no contact, click id, cookie or browser")
    event: dict[str, Any] = {
        "event": TIKTOK_EVENTS.get(conversion.kind, conversion.event_name),
        "event_time": int(conversion.occurred_at.timestamp()),
        "event_id": conversion.event_id,
        "user": user,
    }
    if conversion.page_url:
        event["page"] = {"url": conversion.page_url}
    if (value := _value(conversion)) is not None:
        event["properties"] = {"value": value, "currency": str(conversion.currency).upper()}
    return Built(event, {k: k in user for k in ("ttclid", "ttp", "email", "phone", "ip")})


def _mapped_key(conversion: Conversion) -> str:
    """What the tenant maps to an action or rule: the kind, or a custom conversion's event name."""
    return conversion.event_name if conversion.kind == ConversionKind.CUSTOM else str(conversion.kind)


def _linkedin(conversion: Conversion, contact: Contact | None, integration: Integration) -> Built | Unsendable:
    """A ``conversionEvents`` element: the conversion rule, when (ms), the event id LinkedIn deduplicates by,
    and who: the SHA-256 of the email (trimmed, lower-case) and the ``li_fat_id`` click id."""
    rule = (integration.settings.get("conversion_actions") or {}).get(_mapped_key(conversion))
    if not rule:
        return Unsendable(f"the integration has no conversion rule for {_mapped_key(conversion)}")
    touch = conversion.touches.get(Platform.LINKEDIN.value) or {}
    user_ids = []
    if contact is not None and (email := hashing.sha256(hashing.meta_email(contact.email))):
        user_ids.append({"idType": "SHA256_EMAIL", "idValue": email})
    if fat_id := touch.get("click_ids", {}).get("li_fat_id"):
        user_ids.append({"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": fat_id})
    if not user_ids:
        return Unsendable("nothing LinkedIn can match: no email or li_fat_id")
    user: dict[str, Any] = {"userIds": user_ids}
    if contact is not None and contact.first_name and contact.last_name:  # LinkedIn takes both or neither
        user["userInfo"] = {"firstName": contact.first_name, "lastName": contact.last_name}
    event: dict[str, Any] = {
        "conversion": f"urn:lla:llaPartnerConversion:{rule}",
        "conversionHappenedAt": int(conversion.occurred_at.timestamp() * 1000),
        "eventId": conversion.event_id,
        "user": user,
    }
    if (value := _value(conversion)) is not None:
        digits = minor_unit_digits(str(conversion.currency))
        event["conversionValue"] = {"currencyCode": str(conversion.currency).upper(), "amount": f"{value:.{digits}f}"}
    present = {i["idType"] for i in user_ids}
    return Built(event, {"SHA256_EMAIL": "SHA256_EMAIL" in present, "li_fat_id": bool(fat_id)})


def build(
    conversion: Conversion, contact: Contact | None, integration: Integration, consent: VisitorConsent | None
) -> Built | Unsendable:
    """The conversion as ``integration``'s platform takes it, or why it cannot be sent there."""
    platform = Platform(integration.platform)
    if platform == Platform.META:
        return _meta(conversion, contact, integration)
    if platform == Platform.GOOGLE_ADS:
        return _google(conversion, contact, integration, consent)
    if platform == Platform.LINKEDIN:
        return _linkedin(conversion, contact, integration)
    return _tiktok(conversion, contact)
