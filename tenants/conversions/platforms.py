"""The ad platforms' HTTP APIs: one batch in, one outcome per event out, classified as the specification says
(``specs/ad-platforms.md``): sent, retry (with a delay), permanent (with the reason), or an authentication error
that pauses the integration.

Tokens travel in headers or the body, never in a URL, so no access log or HTTP library log line carries one;
nothing here logs a payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tenants.conversions import google_oauth
from tenants.errors import Invalid
from tenants.models import Integration, Platform
from tenants.settings import get_settings

__all__ = [
    "BATCH_LIMITS",
    "AuthError",
    "BatchAnswer",
    "EventOutcome",
    "retract",
    "send",
    "send_timeout",
]

BATCH_LIMITS = {Platform.META: 1000, Platform.GOOGLE_ADS: 2000, Platform.TIKTOK: 1000, Platform.LINKEDIN: 1000}
LINKEDIN_VERSION = "202611"
"""The ``LinkedIn-Version`` (YYYYMM) the requests are written for."""


def send_timeout() -> httpx.Timeout:
    """30 s (5 s to connect), or a third of the delivery lease when that is shorter: a sender gives up on a
    request long before anyone may take its batch again."""
    seconds = min(30.0, get_settings().conversions_lease_seconds / 3)
    return httpx.Timeout(seconds, connect=min(5.0, seconds))


MAX_REASON = 500


class AuthError(Exception):
    """The platform refused the integration's token: nothing more is sent until the tenant reconnects."""


@dataclass(frozen=True)
class EventOutcome:
    status: str
    """``sent``, ``retry`` or ``permanent``."""
    reason: str | None = None
    retry_after: float | None = None
    """Seconds the platform asked to wait (Retry-After, Google's TOO_RECENT_EVENT), else the backoff decides."""


@dataclass(frozen=True)
class BatchAnswer:
    """What a request answered: per event (Google's partial failures), or for the whole batch."""

    whole: EventOutcome | None = None
    per_event: tuple[EventOutcome, ...] = ()
    splittable: bool = False
    """A refusal of the whole batch that one bad event causes (Meta's invalid parameter, TikTok's): split it to
    find that one. Refusals about the request (credentials, quota, a malformed body) are never split."""


_SENT = EventOutcome("sent")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _reason(platform: str, detail: Any) -> str:
    return f"{platform}: {detail}"[:MAX_REASON]


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- Meta ----------------------------------------------------------------------------------------

_META_RETRY = frozenset({1, 2})
_META_BACK_OFF = frozenset({4, 17, 613, 80001})
# Invalid token (190) and missing permission (10, 200): the credentials are wrong, not one event.
_META_AUTH = frozenset({10, 190, 200})
_META_INVALID_PARAMETER = 100
"""A bad event's refusal: code 100 with the subcode of what is wrong with it (its time, its user data …)."""
_META_REQUEST_SUBCODES = frozenset({33})
"""Code 100 about the request itself: 33, the pixel does not exist or the token cannot reach it."""


def _meta(
    integration: Integration, tokens: dict[str, str], events: Sequence[dict[str, Any]], test: bool
) -> BatchAnswer:
    settings = get_settings().ad_platforms
    body: dict[str, Any] = {"data": list(events), "access_token": tokens.get("access_token", "")}
    if test and integration.settings.get("test_event_code"):
        body["test_event_code"] = integration.settings["test_event_code"]
    url = f"{settings.meta}/{integration.settings['pixel_id']}/events"
    response = httpx.post(url, json=body, timeout=send_timeout())
    if response.is_success:
        return BatchAnswer(whole=_SENT)
    error = _json(response).get("error") or {}
    code = error.get("code")
    detail = f"{response.status_code} code {code}: {error.get('message') or response.reason_phrase}"
    if code in _META_AUTH or response.status_code in (401, 403):
        raise AuthError(_reason("Meta refused the access token", detail))
    if code in _META_RETRY or code in _META_BACK_OFF or response.status_code == 429 or response.status_code >= 500:
        return BatchAnswer(whole=EventOutcome("retry", _reason("Meta", detail), _retry_after(response)))
    if code == _META_INVALID_PARAMETER and error.get("error_subcode") not in (None, *_META_REQUEST_SUBCODES):
        # Meta takes a batch whole or not at all: one bad (or too old) event refuses every other one.
        return BatchAnswer(whole=EventOutcome("permanent", _reason("Meta", detail)), splittable=True)
    # About the request, not one event (no such pixel, a malformed body): splitting cannot isolate anything,
    # and the events are not at fault. The destination backs off and the batch is tried again.
    return BatchAnswer(whole=EventOutcome("retry", _reason("Meta refused the request", detail)))


# --- Google Ads ----------------------------------------------------------------------------------

_GOOGLE_SENT = frozenset({"CLICK_CONVERSION_ALREADY_EXISTS", "CLICK_NOT_FOUND"})
"""Already there (a redelivery), or a click Google does not attribute: nothing to send again."""
_GOOGLE_RETRY = frozenset(
    {
        "TRANSIENT_ERROR",
        "INTERNAL_ERROR",
        "DEADLINE_EXCEEDED",
        "RESOURCE_TEMPORARILY_EXHAUSTED",
        "CONCURRENT_MODIFICATION",
    }
)
_GOOGLE_WAITS = {"TOO_RECENT_EVENT": 6 * 3600.0, "RESOURCE_EXHAUSTED": 3600.0}
_GOOGLE_AUTH = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "OAUTH_TOKEN_INVALID", "OAUTH_TOKEN_EXPIRED"})

_access_tokens: dict[tuple[str, str], tuple[str, float]] = {}
"""(tenant, integration) → (access token, expiry): a refresh per hour, not per batch. Never logged."""


def _google_access_token(integration: Integration, tokens: dict[str, str]) -> str:
    key = (str(integration.tenant_id), str(integration.id))
    cached = _access_tokens.get(key)
    if cached and cached[1] > time.time() + 60:
        return cached[0]
    try:
        token = google_oauth.refreshed_access_token(tokens.get("refresh_token", ""))
    except google_oauth.AuthlibBaseError as error:
        if getattr(error, "error", None) in ("invalid_grant", "invalid_client", "unauthorized_client"):
            raise AuthError(_reason("Google refused the refresh token", error.description or error.error)) from None
        raise httpx.HTTPError(f"token endpoint: {getattr(error, 'error', 'error')}") from None
    except ValueError as error:  # an answer that is not a token (not JSON)
        raise httpx.HTTPError(f"token endpoint: {type(error).__name__}") from None
    except Invalid as error:  # no OAuth client configured on this server
        raise AuthError(_reason("Google Ads", error.message)) from None
    if not token.get("access_token"):
        raise httpx.HTTPError("the token endpoint answered no access_token")
    _access_tokens[key] = (str(token["access_token"]), time.time() + float(token.get("expires_in", 3600)))
    return str(token["access_token"])


def _google_error_code(error: dict[str, Any]) -> str:
    codes = error.get("errorCode") or {}
    return str(next(iter(codes.values()), "UNKNOWN")) if isinstance(codes, dict) else "UNKNOWN"


def _google_index(error: dict[str, Any], field: str) -> int | None:
    for element in (error.get("location") or {}).get("fieldPathElements") or []:
        if element.get("fieldName") == field and isinstance(element.get("index"), int):
            return int(element["index"])
    return None


def _google_outcome(code: str, message: str) -> EventOutcome:
    if code in _GOOGLE_SENT:
        return EventOutcome("sent", _reason("Google", code))
    if code in _GOOGLE_WAITS:
        return EventOutcome("retry", _reason("Google", f"{code}: {message}"), _GOOGLE_WAITS[code])
    if code in _GOOGLE_RETRY:
        return EventOutcome("retry", _reason("Google", f"{code}: {message}"))
    return EventOutcome("permanent", _reason("Google", f"{code}: {message}"))


def _google_post(
    integration: Integration, tokens: dict[str, str], method: str, field: str, items: Sequence[dict[str, Any]], *,
    outcome: Callable[[str, str], EventOutcome], test: bool = False,
) -> BatchAnswer:  # fmt: skip
    """One ``customers/{id}:{method}`` request with ``items`` under ``field`` and partial failure on, as Google
    requires for both uploads and adjustments; each item's outcome from its error, if any, in the answer."""
    settings = get_settings().ad_platforms
    headers = {"Authorization": f"Bearer {_google_access_token(integration, tokens)}"}
    if login := integration.settings.get("login_customer_id"):
        headers["login-customer-id"] = str(login)
    if settings.google_developer_token:
        headers["developer-token"] = settings.google_developer_token
    body: dict[str, Any] = {field: list(items), "partialFailure": True}
    if test:
        body["validateOnly"] = True
    url = f"{settings.google_ads}/customers/{integration.settings['customer_id']}:{method}"
    response = httpx.post(url, json=body, headers=headers, timeout=send_timeout())
    answer = _json(response)
    if response.status_code in (401, 403) or (answer.get("error") or {}).get("status") in _GOOGLE_AUTH:
        _access_tokens.pop((str(integration.tenant_id), str(integration.id)), None)
        raise AuthError(_reason("Google refused the credentials", (answer.get("error") or {}).get("message", "401")))
    if response.status_code == 429 or response.status_code >= 500:
        detail = f"{response.status_code} {(answer.get('error') or {}).get('status', response.reason_phrase)}"
        return BatchAnswer(whole=EventOutcome("retry", _reason("Google", detail), _retry_after(response)))
    if not response.is_success:
        # With partialFailure on, Google answers a bad conversion in partialFailureError; a whole-request error
        # is about the request (its shape, the account, a quota), never one conversion: no split, back off.
        error = answer.get("error") or {}
        detail = f"{response.status_code} {error.get('status', '')}: {error.get('message', response.reason_phrase)}"
        return BatchAnswer(whole=EventOutcome("retry", _reason("Google refused the request", detail)))
    outcomes = [_SENT] * len(items)
    # Partial failures name the failed item by its index in the request's list (the proto's snake_case name).
    path = {"conversions": "conversions", "conversionAdjustments": "conversion_adjustments"}[field]
    failure = answer.get("partialFailureError") or {}
    for detail in failure.get("details") or []:
        for error in detail.get("errors") or []:
            index = _google_index(error, path)
            if index is not None and 0 <= index < len(outcomes):
                outcomes[index] = outcome(_google_error_code(error), str(error.get("message", "")))
    return BatchAnswer(per_event=tuple(outcomes))


def _google(
    integration: Integration, tokens: dict[str, str], clicks: Sequence[dict[str, Any]], test: bool
) -> BatchAnswer:
    return _google_post(
        integration, tokens, "uploadClickConversions", "conversions", clicks, outcome=_google_outcome, test=test
    )


_GOOGLE_RETRACTED = frozenset({"CONVERSION_ALREADY_RETRACTED"})
"""A redelivered retraction: done already."""
_GOOGLE_ADJUSTMENT_WAITS = {
    # Google adjusts a conversion only once it is 24 hours old, and a new conversion action after 6 hours.
    "TOO_RECENT_CONVERSION": 3600.0,
    "TOO_RECENT_CONVERSION_ACTION": 6 * 3600.0,
}


def _google_adjustment_outcome(code: str, message: str) -> EventOutcome:
    if code in _GOOGLE_RETRACTED:
        return EventOutcome("sent", _reason("Google", code))
    if code in _GOOGLE_ADJUSTMENT_WAITS:
        return EventOutcome("retry", _reason("Google", f"{code}: {message}"), _GOOGLE_ADJUSTMENT_WAITS[code])
    if code in _GOOGLE_RETRY or code in _GOOGLE_WAITS:
        return _google_outcome(code, message)
    # CONVERSION_NOT_FOUND, CONVERSION_EXPIRED (54 days), ADJUSTMENT_PRECEDES_CONVERSION …: no retry cures them.
    return EventOutcome("permanent", _reason("Google", f"{code}: {message}"))


def retract(integration: Integration, tokens: dict[str, str], adjustments: Sequence[dict[str, Any]]) -> BatchAnswer:
    """One ``uploadConversionAdjustments`` request (Google Ads only: the others have no way to withdraw an
    event). Outcomes as :func:`send`'s: ``sent`` means retracted (or retracted already)."""
    if integration.platform != Platform.GOOGLE_ADS:
        raise ValueError(f"{integration.platform} has no API to withdraw a conversion")
    try:
        return _google_post(
            integration, tokens, "uploadConversionAdjustments", "conversionAdjustments", adjustments,
            outcome=_google_adjustment_outcome,
        )  # fmt: skip
    except httpx.HTTPError as error:
        return BatchAnswer(whole=EventOutcome("retry", _reason(integration.platform, type(error).__name__)))


# --- TikTok --------------------------------------------------------------------------------------

_TIKTOK_AUTH = frozenset({40001, 40100, 40101, 40102, 40104, 40105})
_TIKTOK_RETRY = frozenset({40016, 40100001, 50000, 50001, 50002})
_TIKTOK_INVALID_PARAMETER = 40002


def _tiktok(
    integration: Integration, tokens: dict[str, str], events: Sequence[dict[str, Any]], test: bool
) -> BatchAnswer:
    settings = get_settings().ad_platforms
    body: dict[str, Any] = {
        "event_source": "web",
        "event_source_id": integration.settings["pixel_code"],
        "data": list(events),
    }
    if test and integration.settings.get("test_event_code"):
        body["test_event_code"] = integration.settings["test_event_code"]
    response = httpx.post(
        f"{settings.tiktok}/event/track/",
        json=body,
        headers={"Access-Token": tokens.get("access_token", "")},
        timeout=send_timeout(),
    )
    answer = _json(response)
    code = answer.get("code")
    detail = f"{response.status_code} code {code}: {answer.get('message', response.reason_phrase)}"
    if response.status_code in (401, 403) or code in _TIKTOK_AUTH:
        raise AuthError(_reason("TikTok refused the access token", detail))
    if response.status_code == 429 or response.status_code >= 500 or code in _TIKTOK_RETRY:
        return BatchAnswer(whole=EventOutcome("retry", _reason("TikTok", detail), _retry_after(response)))
    if response.is_success and code == 0:
        return BatchAnswer(whole=_SENT)
    if code == _TIKTOK_INVALID_PARAMETER:  # one event's bad field refuses the batch: split to find it
        return BatchAnswer(whole=EventOutcome("permanent", _reason("TikTok", detail)), splittable=True)
    return BatchAnswer(whole=EventOutcome("retry", _reason("TikTok refused the request", detail)))


# --- LinkedIn ------------------------------------------------------------------------------------


def _linkedin(
    integration: Integration, tokens: dict[str, str], events: Sequence[dict[str, Any]], test: bool
) -> BatchAnswer:
    """``POST /rest/conversionEvents`` as a Rest.li ``BATCH_CREATE``: one status per element, in order."""
    del test  # LinkedIn has no test mode (send_test_event refuses before)
    settings = get_settings().ad_platforms
    headers = {
        "Authorization": f"Bearer {tokens.get('access_token', '')}",
        "LinkedIn-Version": LINKEDIN_VERSION,
        "X-Restli-Protocol-Version": "2.0.0",
        "X-RestLi-Method": "BATCH_CREATE",
    }
    response = httpx.post(
        f"{settings.linkedin}/conversionEvents",
        json={"elements": list(events)},
        headers=headers,
        timeout=send_timeout(),
    )
    answer = _json(response)
    detail = f"{response.status_code}: {answer.get('message', response.reason_phrase)}"
    if response.status_code in (401, 403):
        raise AuthError(_reason("LinkedIn refused the access token", detail))
    if response.status_code == 429 or response.status_code >= 500:
        return BatchAnswer(whole=EventOutcome("retry", _reason("LinkedIn", detail), _retry_after(response)))
    if not response.is_success:  # about the request (its shape, the version): per-event errors come per element
        return BatchAnswer(whole=EventOutcome("retry", _reason("LinkedIn refused the request", detail)))
    elements = answer.get("elements")
    if not isinstance(elements, list) or len(elements) != len(events):
        return BatchAnswer(whole=_SENT)
    return BatchAnswer(per_event=tuple(_linkedin_outcome(e if isinstance(e, dict) else {}) for e in elements))


def _linkedin_outcome(element: dict[str, Any]) -> EventOutcome:
    status = element.get("status")
    if not isinstance(status, int) or 200 <= status < 300 or status == 409:  # 409: that event id is there already
        return _SENT
    message = (element.get("error") or {}).get("message", "")
    if status == 429 or status >= 500:
        return EventOutcome("retry", _reason("LinkedIn", f"{status}: {message}"))
    return EventOutcome("permanent", _reason("LinkedIn", f"{status}: {message}"))


_SENDERS = {Platform.META: _meta, Platform.GOOGLE_ADS: _google, Platform.TIKTOK: _tiktok, Platform.LINKEDIN: _linkedin}


def send(
    integration: Integration, tokens: dict[str, str], events: Sequence[dict[str, Any]], *, test: bool = False
) -> BatchAnswer:
    """One request to the integration's platform. :class:`AuthError` when it refuses the token; a network
    error is a retry of the whole batch."""
    try:
        return _SENDERS[Platform(integration.platform)](integration, tokens, events, test)
    except httpx.HTTPError as error:
        return BatchAnswer(whole=EventOutcome("retry", _reason(integration.platform, type(error).__name__)))
