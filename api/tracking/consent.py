"""``POST /t/{site_key}/consent``: the site's consent banner tells Trailmark the browser's ad and analytics consent
(``trailmark('consent', {ads: true|false, analytics: true|false})``)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.datastructures import Cookie
from litestar.params import FromPath

from api.cookies import secure_cookies, visitor_cookie
from api.problems import problem
from api.tracking.collect import cors_headers, request_origin, same_site, site_for
from tenants.conversions import consent
from tenants.isolation import tenant_session
from tenants.models import ConsentSource, PrivacySignal
from tenants.outbox import service as outbox
from tenants.privacy.retention import FORGET_AFTER_INGEST_TASK, forget_anonymous_browser
from tenants.redis_store import get_redis
from tenants.tracking.visitors import VISITOR_COOKIE, VISITOR_COOKIE_MAX_AGE, visitor_of_browser

__all__ = ["set_consent"]


class ConsentCall(msgspec.Struct):
    ads: bool | None = None
    analytics: bool | None = None
    token: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


def _store(
    tenant_id: uuid.UUID, tokens: tuple[str | None, ...], call: ConsentCall, signal: PrivacySignal | None
) -> Any:
    browser = visitor_of_browser(tenant_id, *tokens, first_hit=(uuid.uuid4(), int(time.time() * 1000)))
    if browser.is_new and call.analytics is not True:
        return None  # no genuine token: a browser the site never saw has nothing to consent for yet
    # A new browser granting analytics consent (an opt-in site set no cookie before): it gets its token here.
    answer: dict[str, Any] = {"token": browser.token} if browser.reissued else {}
    with tenant_session(tenant_id) as session:
        if signal is not None:
            consent.record_privacy_signal(session, browser.visitor_id, signal)
        if call.ads is not None:
            stored = consent.set_ads_consent(session, browser.visitor_id, call.ads, ConsentSource.TRACKER)
        if call.analytics is not None:
            stored = consent.set_analytics_consent(session, browser.visitor_id, call.analytics, ConsentSource.TRACKER)
            if call.analytics is False:
                answer["forgotten"] = forget_anonymous_browser(session, browser.visitor_id)
                # Its hits still waiting in the ingest stream are stored after this: forgotten again once they are.
                outbox.enqueue(session, FORGET_AFTER_INGEST_TASK, str(browser.visitor_id))
        answer.update(
            ads=stored.ads,
            changed_at=stored.changed_at.isoformat() if stored.changed_at else None,
            analytics=stored.analytics,
            analytics_changed_at=stored.analytics_changed_at.isoformat() if stored.analytics_changed_at else None,
        )
    if call.analytics is not None:  # after the commit: collect reads this mirror, never PostgreSQL
        key = consent.analytics_consent_key(tenant_id, browser.visitor_id)
        get_redis().set(key, "1" if call.analytics else "0", ex=VISITOR_COOKIE_MAX_AGE)
    return answer


def _cleared_visitor_cookie() -> Cookie:
    return Cookie(key=VISITOR_COOKIE, value="", max_age=0, httponly=True, secure=secure_cookies(), samesite="lax")


@post("/t/{site_key:str}/consent", include_in_schema=False, request_max_body_size=4096, status_code=200)
async def set_consent(request: Request[Any, Any, Any], site_key: FromPath[str]) -> Response[Any]:
    """The browser's token comes from our own cookie (same-site) or the body; 422 without a genuine one (except
    for granting analytics consent, which issues the first token on an opt-in site)."""
    site = await site_for(site_key)
    origin = request_origin(request.headers)
    if site is None or origin is None or origin not in site.allowed_origins:
        return problem(403, "origin not allowed for this site")
    try:
        call = msgspec.json.decode(await request.body(), type=ConsentCall)
    except msgspec.DecodeError as error:
        return problem(400, f"malformed consent: {error}", headers=cors_headers(origin))
    if call.ads is None and call.analytics is None:
        return problem(400, "say ads, analytics or both (true or false)", headers=cors_headers(origin))
    tokens = (request.cookies.get(VISITOR_COOKIE), call.token)
    signal = consent.privacy_signal_of(request.headers)
    answer = await anyio.to_thread.run_sync(_store, site.tenant_id, tokens, call, signal)
    if answer is None:
        return problem(422, "no visitor token of this site: send a page view first", headers=cors_headers(origin))
    cookies: list[Cookie] = []
    if same_site(request.headers, origin):
        if call.analytics is False:
            cookies.append(_cleared_visitor_cookie())
        elif "token" in answer:
            cookies.append(visitor_cookie(answer["token"], site.cookie_max_age))
    return Response(answer, headers={**cors_headers(origin), "Cache-Control": "no-store"}, cookies=cookies)
