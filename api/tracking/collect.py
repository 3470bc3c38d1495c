"""Public tracking endpoints: the tracker script and collect. Async end to end; touches Redis only
(the site lookup reads PostgreSQL once per site per 30 s, in a worker thread)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import msgspec
from litestar import Request, Response, get, post, route
from litestar.params import FromPath
from redis.exceptions import RedisError

from api.cookies import visitor_cookie
from tenants.settings import get_settings
from tenants.tracking.buffer import BufferFull, IngestProducer
from tenants.tracking.hits import MAX_BATCH_BYTES, BatchError, Envelope, decode_batch
from tenants.tracking.origins import bot_reason, client_ip, normalize_origin, truncate_ip
from tenants.tracking.sites import SiteConfig, cached_site, resolve_site
from tenants.tracking.visitors import VISITOR_COOKIE, visitor_of_browser

__all__ = [
    "collect",
    "collect_preflight",
    "cors_headers",
    "request_origin",
    "same_site",
    "site_for",
    "tracker_script",
]

log = logging.getLogger("trailmark.collect")
RETRY_AFTER_SECONDS = 5
TRACKER_SOURCE = Path(__file__).parent / "static" / "tracker.js"
_encode = msgspec.json.encode


async def site_for(site_key: str) -> SiteConfig | None:
    known, site = cached_site(site_key)
    if known:
        return site
    return await anyio.to_thread.run_sync(resolve_site, site_key)


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    body = _encode({"type": "about:blank", "status": status, "detail": detail})
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)


def cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def request_origin(request: Request[Any, Any, Any]) -> str | None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return normalize_origin(origin)
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return normalize_origin(f"{parts.scheme}://{parts.netloc}")
    return None


def same_site(request: Request[Any, Any, Any], origin: str) -> bool:
    """Collect is served on the page's own host (a proxy or hosted pages): the server may set the cookie."""
    host = (request.headers.get("host") or "").split(":")[0].lower()
    return bool(host) and urlsplit(origin).hostname == host


@post("/t/{site_key:str}/collect", request_max_body_size=MAX_BATCH_BYTES, include_in_schema=False)
async def collect(request: Request[Any, Any, Any], site_key: FromPath[str]) -> Response[bytes]:
    """Accept a batch of hits: validate, queue durably in Redis, answer 202 with the visitor token."""
    site = await site_for(site_key)
    if site is None:
        return _problem(404, "unknown site")
    origin = request_origin(request)
    if origin is None or origin not in site.allowed_origins:
        # Readable by the refused page's tracker, so it drops the hits instead of retrying forever.
        refusal = cors_headers(origin) if origin else None
        return _problem(403, f"origin {origin or '(none)'} is not allowed for this site", refusal)
    cors = cors_headers(origin)
    if site.honor_dnt and (request.headers.get("dnt") == "1" or request.headers.get("sec-gpc") == "1"):
        return Response(b"", status_code=204, headers=cors)
    try:
        body_token, hits = decode_batch(await request.body())
    except BatchError as error:
        return _problem(error.status, error.reason, cors)

    settings = get_settings()
    browser = visitor_of_browser(
        site.tenant_id,
        request.cookies.get(VISITOR_COOKIE),
        body_token,
        first_hit=(hits[0].hit_id, hits[0].ts),
    )
    user_agent = request.headers.get("user-agent")
    reason = bot_reason(user_agent, request.headers.get("sec-purpose") or request.headers.get("purpose"))
    accepted = len(hits)
    if reason is None or site.bot_policy == "flag":
        peer = request.client.host if request.client else None
        ip = client_ip(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)
        envelope = Envelope(
            tenant_id=site.tenant_id,
            site_id=site.site_id,
            visitor_id=browser.visitor_id,
            received_at=int(time.time() * 1000),
            hits=hits,
            user_agent=user_agent[:1000] if user_agent else None,
            ip=truncate_ip(ip) if site.truncate_ip else ip,
            bot_reason=reason,
        )
        producer: IngestProducer = request.app.state.ingest
        try:
            await producer.append(envelope)
        except BufferFull:
            return _problem(
                503,
                "the ingest buffer is full; retry later",
                {**cors, "Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except (RedisError, OSError) as error:
            log.warning("collect could not reach Redis: %s", error)
            return _problem(
                503,
                "tracking is briefly unavailable; retry later",
                {**cors, "Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    else:
        accepted = 0  # bot_policy 'drop'
    body = _encode({"token": browser.token, "visitor_id": str(browser.visitor_id), "accepted": accepted})
    response = Response(body, status_code=202, media_type="application/json", headers=cors)
    if browser.reissued and same_site(request, origin):
        response.set_cookie(visitor_cookie(browser.token))
    return response


@route("/t/{site_key:str}/collect", http_method="OPTIONS", include_in_schema=False)
async def collect_preflight(request: Request[Any, Any, Any], site_key: FromPath[str]) -> Response[bytes]:
    """CORS preflight (the tracker sends text/plain and needs none, but other senders may)."""
    site = await site_for(site_key)
    origin = request_origin(request)
    if site is None or origin is None or origin not in site.allowed_origins:
        return _problem(403, "origin not allowed")
    headers = {
        **cors_headers(origin),
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "86400",
    }
    return Response(b"", status_code=204, headers=headers)


@lru_cache(maxsize=1024)
def _script_for(site_key: str, base_url: str, partner_params: tuple[str, ...], honor_dnt: bool) -> tuple[bytes, str]:
    config = {
        "collect": f"{base_url}/t/{site_key}/collect",
        "exchange": f"{base_url}/t/{site_key}/exchange",
        "whoami": f"{base_url}/t/{site_key}/whoami",
        "cookie": VISITOR_COOKIE,
        "partnerParams": list(partner_params),
        "respectDnt": honor_dnt,
    }
    source = TRACKER_SOURCE.read_text().replace('"__TRAILMARK_CONFIG__"', json.dumps(config), 1)
    body = source.encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@get("/t/{script:str}", include_in_schema=False)
async def tracker_script(request: Request[Any, Any, Any], script: FromPath[str]) -> Response[bytes]:
    """``/t/{site_key}.js``: the tracker with the site's settings filled in."""
    if not script.endswith(".js"):
        return _problem(404, "not found")
    site = await site_for(script.removesuffix(".js"))
    if site is None:
        return _problem(404, "unknown site")
    body, etag = _script_for(site.site_key, get_settings().base_url, site.partner_params, site.honor_dnt)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type="text/javascript", headers=headers)
