"""Public tracking endpoints: the tracker script and collect.

Collect takes every page view of every tenant's sites, so it is a plain ASGI handler mounted at
``/collect`` (``POST /collect/{site_key}``): it reads the few headers it needs in one pass over the scope
and writes its answer as two ASGI messages, without Litestar's request, parameter and response objects
(twice the throughput, see ``bench/collect.py``). It is a mount because Litestar 2 cannot route an
ASGI handler whose path has a parameter. It touches Redis only; the site lookup reads PostgreSQL once
per site per 30 s, in a worker thread.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, asgi, get
from litestar.params import FromPath
from litestar.types import (
    HTTPReceiveMessage,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)
from prometheus_client import Counter

from api.cookies import visitor_cookie
from api.loading import load_once
from api.problems import PROBLEM_JSON, problem, problem_body
from tenants.conversions.consent import analytics_consent_key
from tenants.metrics import COLLECT_BATCHES, COLLECT_HITS
from tenants.redis_store import REDIS_UNAVAILABLE
from tenants.settings import get_settings
from tenants.text import strip_unstorable
from tenants.tracking.buffer import BufferFull, IngestProducer
from tenants.tracking.cookieless import cookieless_hit, day_salt, visitor_hash
from tenants.tracking.hits import MAX_BATCH_BYTES, BatchError, Envelope, Hit, decode_batch
from tenants.tracking.origins import bot_reason, canonical_ip, client_ip, normalize_origin, truncate_ip
from tenants.tracking.sites import SiteConfig, cached_site, resolve_site
from tenants.tracking.visitors import VISITOR_COOKIE, BrowserVisitor, visitor_of_browser

__all__ = [
    "SKIP_COMPRESSION",
    "collect",
    "collect_url",
    "cors_headers",
    "request_origin",
    "same_site",
    "site_for",
    "tracker_script",
]

log = logging.getLogger("trailmark.collect")
RETRY_AFTER_SECONDS = 5
TRACKER_SOURCE = Path(__file__).parent / "static" / "tracker.js"
SKIP_COMPRESSION = "skip_compression"
"""Route option: the compression middleware leaves these handlers alone (their answers are tiny)."""
_encode = msgspec.json.encode


async def site_for(site_key: str) -> SiteConfig | None:
    known, site = cached_site(site_key)
    if known:
        return site
    return await load_once(("site", site_key), lambda: resolve_site(site_key))


def cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def request_origin(headers: Mapping[str, str]) -> str | None:
    """The page's origin: ``Origin``, else the scheme and host of ``Referer``. Header names in lower case."""
    origin = headers.get("origin")
    if origin and origin != "null":
        return normalize_origin(origin)
    referer = headers.get("referer")
    if referer:
        try:
            parts = urlsplit(referer)
        except ValueError:  # "http://[oops": not a URL, so no origin
            return None
        return normalize_origin(f"{parts.scheme}://{parts.netloc}")
    return None


def same_site(headers: Mapping[str, str], origin: str) -> bool:
    """Served on the page's own host (a proxy or hosted pages): the server may set the visitor cookie."""
    host = (headers.get("host") or "").split(":")[0].lower()
    return bool(host) and urlsplit(origin).hostname == host


# --- collect -------------------------------------------------------------------------------------


Headers = tuple[tuple[bytes, bytes], ...]
"""As ASGI sends them: lower-case names, latin-1 bytes."""


def _encoded(headers: dict[str, str]) -> Headers:
    return tuple((name.lower().encode(), value.encode("latin-1")) for name, value in headers.items())


@lru_cache(maxsize=4096)
def _allowed_origin_cors(origin: str) -> Headers:
    """Encoded once per allowed origin: every accepted batch carries them."""
    return _encoded(cors_headers(origin))


_RETRY_LATER: Headers = ((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),)


class _Answer(msgspec.Struct):
    """What collect sends back, and how ``/metrics`` counts it (a batch's outcome and reason, its hits)."""

    status: int
    body: bytes = b""
    headers: Headers = ()
    content_type: str = "application/json"
    outcome: str = "accepted"
    """``accepted``, ``dropped`` (answered, nothing stored: DNT, consent, bots), ``refused``, ``unavailable``."""
    reason: str = ""
    hits: int = 0
    """Hits of the batch when it was decoded, else 0."""


def _problem(status: int, detail: str, headers: Headers = (), *, outcome: str, reason: str, hits: int = 0) -> _Answer:
    return _Answer(status, _encode(problem_body(status, detail)), headers, PROBLEM_JSON, outcome, reason, hits)


@lru_cache(maxsize=64)
def _counter(family: Counter, outcome: str, reason: str) -> Counter:
    """A label child, looked up once per outcome and reason instead of once per batch."""
    return family.labels(outcome, reason)


def _count(answer: _Answer) -> None:
    _counter(COLLECT_BATCHES, answer.outcome, answer.reason).inc()
    if answer.hits:
        _counter(COLLECT_HITS, answer.outcome, answer.reason).inc(answer.hits)


_COLLECT_HEADERS = {
    name.encode(): name
    for name in (
        "origin",
        "referer",
        "host",
        "cookie",
        "user-agent",
        "content-length",
        "dnt",
        "sec-gpc",
        "sec-purpose",
        "purpose",
        "x-forwarded-for",
    )
}


def _read_headers(scope: HTTPScope) -> dict[str, str]:
    """The headers collect reads, by lower-case name (ASGI servers give names in lower case); a
    repeated one is joined as HTTP joins it."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = _COLLECT_HEADERS.get(raw_name)
        if name is None:
            continue
        value = raw_value.decode("latin-1")
        if name in found:
            value = found[name] + ("; " if name == "cookie" else ", ") + value
        found[name] = value
    return found


def _cookie(header: str | None, name: str) -> str | None:
    for pair in (header or "").split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value.strip('"')
    return None


class _ClientGone(Exception):
    """The client closed the connection before its body arrived: nothing to answer."""


async def _read_body(receive: Receive, declared_length: str | None) -> bytes:
    too_large = BatchError(413, f"the batch is over {MAX_BATCH_BYTES} bytes, the limit")
    if declared_length and declared_length.isdigit() and int(declared_length) > MAX_BATCH_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = cast("HTTPReceiveMessage", await receive())
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message["body"]
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


COLLECT_PATH = "/collect"


def collect_url(base_url: str, site_key: str) -> str:
    return f"{base_url}{COLLECT_PATH}/{site_key}"


@asgi(COLLECT_PATH, is_mount=True, copy_scope=False, opt={SKIP_COMPRESSION: True})
async def collect(scope: Scope, receive: Receive, send: Send) -> None:
    """``/collect/{site_key}``. POST: a batch of hits; OPTIONS: the CORS preflight (the tracker sends
    text/plain and needs none, but other senders may)."""
    http = cast("HTTPScope", scope)  # an ASGI route handler also takes websockets; this path has none
    headers = _read_headers(http)
    rest = http["path"]  # what follows the mount path: "/{site_key}/" (or "abc/" for "/collectabc")
    site_key = rest.strip("/")
    if not rest.startswith("/") or not site_key or "/" in site_key:
        answer = _problem(404, "not found: collect is POST /collect/{site_key}", outcome="refused", reason="path")
    elif http["method"] == "POST":
        try:
            answer = await _accept_batch(http, receive, headers, site_key)
        except _ClientGone:
            return
        _count(answer)
    elif http["method"] == "OPTIONS":
        answer = await _preflight(headers, site_key)
    else:
        answer = _problem(
            405, "collect takes POST", ((b"allow", b"POST, OPTIONS"),), outcome="refused", reason="method"
        )
    response_headers = list(answer.headers)
    if answer.body:
        response_headers.append((b"content-type", answer.content_type.encode()))
    if answer.status != 204:  # No Content has no Content-Length (RFC 9110, 8.6)
        response_headers.append((b"content-length", str(len(answer.body)).encode()))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": answer.status,
        "headers": response_headers,
    }
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": answer.body, "more_body": False}
    await send(body)


async def _accept_batch(scope: HTTPScope, receive: Receive, headers: dict[str, str], site_key: str) -> _Answer:
    """Validate, queue durably in Redis, answer 202: with ``{token, visitor_id, accepted}`` when the
    browser gets a new token or not every hit was taken, else empty."""
    site = await site_for(site_key)
    if site is None:
        return _problem(404, "unknown site", outcome="refused", reason="unknown_site")
    origin = request_origin(headers)
    if origin is None or origin not in site.allowed_origins:
        # Readable by the refused page's tracker, so it drops the hits instead of retrying forever.
        refusal = _encoded(cors_headers(origin)) if origin else ()
        message = f"origin {origin or '(none)'} is not allowed for this site"
        return _problem(403, message, refusal, outcome="refused", reason="origin")
    cors = _allowed_origin_cors(origin)
    if site.honor_dnt and (headers.get("dnt") == "1" or headers.get("sec-gpc") == "1"):
        return _Answer(204, headers=cors, outcome="dropped", reason="do_not_track")
    try:
        body_token, hits = decode_batch(await _read_body(receive, headers.get("content-length")))
    except BatchError as error:
        why = "too_large" if error.status == 413 else "malformed"
        return _problem(error.status, error.reason, cors, outcome="refused", reason=why)

    browser = visitor_of_browser(
        site.tenant_id,
        _cookie(headers.get("cookie"), VISITOR_COOKIE),
        body_token,
        first_hit=(hits[0].hit_id, hits[0].ts),
    )
    state = scope["litestar_app"].state
    producer: IngestProducer = state.ingest
    rule = _TRACK if site.consent_mode == "none" else await _consent_rule(state.redis, site, browser)
    if rule is None:
        message = "tracking is briefly unavailable; retry later"
        return _problem(503, message, cors + _RETRY_LATER, outcome="unavailable", reason="redis", hits=len(hits))
    if rule is _IGNORE:  # nothing stored, nothing counted: the browser said no
        return _Answer(202, _UNTRACKED, cors, outcome="dropped", reason="no_consent", hits=len(hits))
    user_agent = headers.get("user-agent")
    reason = bot_reason(user_agent, headers.get("sec-purpose") or headers.get("purpose"))
    accepted = len(hits)
    if reason is None or site.bot_policy == "flag":
        client = scope.get("client")
        ip = client_ip(client[0] if client else None, headers.get("x-forwarded-for"), get_settings().trusted_proxies)
        try:
            await producer.append(await _envelope(producer, site, browser, rule, hits, ip, user_agent, reason))
        except BufferFull:
            message = "the ingest buffer is full; retry later"
            return _problem(
                503, message, cors + _RETRY_LATER, outcome="unavailable", reason="buffer_full", hits=len(hits)
            )
        except REDIS_UNAVAILABLE as error:
            log.warning("collect could not reach Redis: %s", error)
            message = "tracking is briefly unavailable; retry later"
            return _problem(503, message, cors + _RETRY_LATER, outcome="unavailable", reason="redis", hits=len(hits))
        outcome, why = "accepted", ("" if reason is None else "bot_flagged")
    else:
        accepted = 0  # bot_policy 'drop'
        outcome, why = "dropped", "bot"
    if rule is _COUNT:  # counted without a cookie: no token, nothing for the browser to keep
        why = "cookieless" if outcome == "accepted" else why
        return _Answer(202, _UNTRACKED, cors, outcome=outcome, reason=why, hits=len(hits))
    return _tracked_answer(site, browser, (accepted, len(hits)), headers, origin, cors, (outcome, why))


def _tracked_answer(
    site: SiteConfig,
    browser: BrowserVisitor,
    taken: tuple[int, int],
    headers: dict[str, str],
    origin: str,
    cors: Headers,
    counted: tuple[str, str],
) -> _Answer:
    """202 to a tracked browser: empty, or its (new) token and how many of its hits (``taken``: accepted, sent)
    were accepted."""
    accepted, sent = taken
    outcome, why = counted
    if not browser.reissued and accepted == sent:
        # The common case, a returning browser: its token stays and every hit was taken. Nothing to
        # say, and no body saves the server a write per request (a beacon cannot read it anyway).
        return _Answer(202, headers=cors, outcome=outcome, reason=why, hits=sent)
    body = _encode({"token": browser.token, "visitor_id": str(browser.visitor_id), "accepted": accepted})
    if browser.reissued and same_site(headers, origin):
        cors = (*cors, visitor_cookie(browser.token, site.cookie_max_age).to_encoded_header())
    return _Answer(202, body, cors, outcome=outcome, reason=why, hits=sent)


_UNTRACKED = _encode({"accepted": 0})


class _Rule(enum.Enum):
    """What collect does with a browser's batch under its site's consent mode."""

    TRACK = "track"
    """Store the visits (the site asks for no consent, or the browser gave it)."""
    COUNT = "count"
    """Count them without a cookie or anything stored (an opt-in site's browser that has not answered)."""
    IGNORE = "ignore"
    """Neither: the browser refused (or withdrew) analytics consent."""


_TRACK, _COUNT, _IGNORE = _Rule.TRACK, _Rule.COUNT, _Rule.IGNORE


async def _consent_rule(client: Any, site: SiteConfig, browser: BrowserVisitor) -> _Rule | None:
    """The site's analytics consent rule, enforced here and not only in the script: ``opt_in`` tracks a browser
    that granted consent and counts, cookielessly, one that has not answered; ``opt_out`` tracks one that has not
    refused. The answer is the Redis mirror the consent call writes (one GET, only on sites that ask for consent);
    None when Redis cannot answer."""
    if browser.is_new:  # no token of ours: it never answered
        return _COUNT if site.consent_mode == "opt_in" else _TRACK
    try:
        answer = await client.get(analytics_consent_key(site.tenant_id, browser.visitor_id))
    except REDIS_UNAVAILABLE as error:
        log.warning("collect could not reach Redis: %s", error)
        return None
    if answer == b"0":
        return _IGNORE
    if site.consent_mode == "opt_in" and answer != b"1":
        return _COUNT
    return _TRACK


async def _envelope(
    producer: IngestProducer,
    site: SiteConfig,
    browser: BrowserVisitor,
    rule: _Rule,
    hits: list[Hit],
    ip: str | None,
    user_agent: str | None,
    reason: str | None,
) -> Envelope:
    """The batch as it goes into the ingest stream. Counted without consent (``_COUNT``): today's salted hash
    instead of a visitor, the hits' attribution fields only, no address and no user agent."""
    now_ms = int(time.time() * 1000)
    if rule is _COUNT:
        salt = await day_salt(producer.client, site.tenant_id, datetime.fromtimestamp(now_ms / 1000, UTC).date())
        return Envelope(
            tenant_id=site.tenant_id,
            site_id=site.site_id,
            visitor_id=visitor_hash(salt, site.site_id, ip, user_agent[:1000] if user_agent else None),
            received_at=now_ms,
            hits=[cookieless_hit(hit) for hit in hits],
            bot_reason=reason,
            cookieless=True,
        )
    if site.consent_mode != "opt_in":  # only there was the page view counted before consent
        for hit in hits:
            hit.counted_before_consent = False
    return Envelope(
        tenant_id=site.tenant_id,
        site_id=site.site_id,
        visitor_id=browser.visitor_id,
        received_at=now_ms,
        hits=hits,
        user_agent=strip_unstorable(user_agent[:1000]) if user_agent else None,
        ip=truncate_ip(ip) if site.truncate_ip else canonical_ip(ip),
        bot_reason=reason,
    )


async def _preflight(headers: dict[str, str], site_key: str) -> _Answer:
    site = await site_for(site_key)
    origin = request_origin(headers)
    if site is None or origin is None or origin not in site.allowed_origins:
        return _problem(403, "origin not allowed", outcome="refused", reason="origin")
    allowed = {
        **cors_headers(origin),
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "86400",
    }
    return _Answer(204, headers=_encoded(allowed))


# --- the tracker script --------------------------------------------------------------------------


def _compact(source: str) -> str:
    """Without indentation and whole-line ``//`` comments (a fifth of the gzipped bytes, sent with every
    first page view). Safe for this script: it has no multi-line strings."""
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//"))


@lru_cache(maxsize=1024)
def _script_for(
    site_key: str, base_url: str, partner_params: tuple[str, ...], honor_dnt: bool, consent_mode: str, cookie_age: int
) -> tuple[bytes, str]:
    config = {
        "collect": collect_url(base_url, site_key),
        "exchange": f"{base_url}/t/{site_key}/exchange",
        "whoami": f"{base_url}/t/{site_key}/whoami",
        "consent": f"{base_url}/t/{site_key}/consent",
        "cookie": VISITOR_COOKIE,
        "partnerParams": list(partner_params),
        "respectDnt": honor_dnt,
        "consentMode": consent_mode,
        "cookieAge": cookie_age,
    }
    source = TRACKER_SOURCE.read_text().replace('"__TRAILMARK_CONFIG__"', json.dumps(config), 1)
    body = _compact(source).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@get("/t/{script:str}", include_in_schema=False)
async def tracker_script(request: Request[Any, Any, Any], script: FromPath[str]) -> Response[Any]:
    """``/t/{site_key}.js``: the tracker with the site's settings filled in."""
    if not script.endswith(".js"):
        return problem(404, "not found")
    site = await site_for(script.removesuffix(".js"))
    if site is None:
        return problem(404, "unknown site")
    body, etag = _script_for(
        site.site_key,
        get_settings().base_url,
        site.partner_params,
        site.honor_dnt,
        site.consent_mode,
        site.cookie_max_age,
    )
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type="text/javascript", headers=headers)
