"""``POST /t/{site_key}/consent``: the site's consent banner tells Trailmark the browser's ad consent
(``trailmark('consent', {ads: true|false})``)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.params import FromPath

from api.problems import problem
from api.tracking.collect import cors_headers, request_origin, site_for
from tenants.conversions import consent
from tenants.isolation import tenant_session
from tenants.models import ConsentSource, PrivacySignal
from tenants.tracking.visitors import VISITOR_COOKIE, visitor_of_browser

__all__ = ["set_consent"]


class ConsentCall(msgspec.Struct):
    ads: bool
    token: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


def _store(tenant_id: uuid.UUID, tokens: tuple[str | None, ...], ads: bool, signal: PrivacySignal | None) -> Any:
    browser = visitor_of_browser(tenant_id, *tokens, first_hit=(uuid.uuid4(), int(time.time() * 1000)))
    if browser.is_new:
        return None  # no genuine token: a browser the site never saw has nothing to consent for yet
    with tenant_session(tenant_id) as session:
        if signal is not None:
            consent.record_privacy_signal(session, browser.visitor_id, signal)
        stored = consent.set_ads_consent(session, browser.visitor_id, ads, ConsentSource.TRACKER)
        return {"ads": stored.ads, "changed_at": stored.changed_at.isoformat() if stored.changed_at else None}


@post("/t/{site_key:str}/consent", include_in_schema=False, request_max_body_size=4096, status_code=200)
async def set_consent(request: Request[Any, Any, Any], site_key: FromPath[str]) -> Response[Any]:
    """The browser's token comes from our own cookie (same-site) or the body; 422 without a genuine one."""
    site = await site_for(site_key)
    origin = request_origin(request.headers)
    if site is None or origin is None or origin not in site.allowed_origins:
        return problem(403, "origin not allowed for this site")
    try:
        call = msgspec.json.decode(await request.body(), type=ConsentCall)
    except msgspec.DecodeError as error:
        return problem(400, f"malformed consent: {error}", headers=cors_headers(origin))
    tokens = (request.cookies.get(VISITOR_COOKIE), call.token)
    signal = consent.privacy_signal_of(request.headers)
    answer = await anyio.to_thread.run_sync(_store, site.tenant_id, tokens, call.ads, signal)
    if answer is None:
        return problem(422, "no visitor token of this site: send a page view first", headers=cors_headers(origin))
    return Response(answer, headers={**cors_headers(origin), "Cache-Control": "no-store"})
