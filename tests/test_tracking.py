"""Collect, ingest and the tracking API: what a tenant's visitors' browsers send ends up stored once,
with attribution, and nothing accepted is lost."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from tenants.contacts.service import ContactChanges, create_contact
from tenants.isolation import tenant_session
from tenants.security.tokens import TokenSigner
from tenants.settings import SigningKey, get_settings
from tenants.tracking.visitors import VISITOR_PURPOSE
from tests.conftest import (
    SiteHandle,
    TenantHandle,
    make_site,
    start_api_server,
    start_beat,
    start_worker,
    stop,
    stored_visits,
    wait_stored,
    wait_until,
)

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
HEADERS = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}


def hit(path: str = "/", **fields: Any) -> dict[str, Any]:
    return {
        "hit_id": str(uuid.uuid4()),
        "ts": int(time.time() * 1000),
        "url": f"{ORIGIN}{path}",
        "path": path.split("?", maxsplit=1)[0],
        **fields,
    }


def batch(*hits: dict[str, Any], token: str | None = None) -> bytes:
    return json.dumps({"v": 1, "token": token, "hits": list(hits)}).encode()


def post(client: Any, site: SiteHandle, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(f"/collect/{site.site_key}", content=body, headers=headers or HEADERS)


@pytest.fixture
def site(make_tenant: Callable[..., TenantHandle]) -> SiteHandle:
    return make_site(make_tenant("Shop"), [ORIGIN])


def visitors_of(client: Any, tenant: TenantHandle) -> list[dict[str, Any]]:
    response = client.get("/api/v1/visitors", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# --- collect: what it accepts and refuses -----------------------------------------------------


def test_collect_answers_202_with_a_visitor_token(client: TestClient[Any], site: SiteHandle) -> None:
    response = post(client, site, batch(hit()))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert uuid.UUID(body["visitor_id"])
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    # The same token next time names the same visitor and is not re-issued: nothing to say.
    again = post(client, site, batch(hit(), token=body["token"]))
    assert again.status_code == 202
    assert again.content == b""
    assert again.headers["content-length"] == "0"
    assert again.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed batch"),
        (b'{"v":1,"hits":[]}', "no hits"),
        (b'{"v":1,"hits":[{"ts":1,"url":"https://shop.example/"}]}', "hit_id"),
        (b'{"v":1,"hits":[{"hit_id":"nope","ts":1,"url":"https://shop.example/"}]}', "hit_id"),
        (b'{"v":1,"hits":"lots"}', "malformed batch"),
    ],
)
def test_malformed_batches_get_400_with_the_reason(
    client: TestClient[Any], site: SiteHandle, body: bytes, reason: str
) -> None:
    response = post(client, site, body)
    assert response.status_code == 400
    assert reason in response.json()["detail"]


def test_hits_outside_the_time_window_or_not_http_are_400(client: TestClient[Any], site: SiteHandle) -> None:
    stale = hit()
    stale["ts"] -= 31 * 24 * 3600 * 1000
    assert "outside the accepted window" in post(client, site, batch(stale)).json()["detail"]
    javascript = hit()
    javascript["url"] = "javascript:alert(1)"
    assert post(client, site, batch(javascript)).status_code == 400


def test_oversized_hits_and_batches_get_413(client: TestClient[Any], site: SiteHandle) -> None:
    fat_hit = hit(props={"blob": "x" * 40_000})
    response = post(client, site, batch(fat_hit))
    assert response.status_code == 413
    assert "hits[0]" in response.json()["detail"]
    many = [hit(props={"blob": "x" * 20_000}) for _ in range(30)]
    assert post(client, site, batch(*many)).status_code == 413


def test_a_streamed_body_over_the_limit_is_413_without_a_length(client: TestClient[Any], site: SiteHandle) -> None:
    chunk = b" " * 64 * 1024  # JSON whitespace: only the size can refuse it

    def body() -> Iterator[bytes]:
        yield batch(hit())[:-1]
        yield from (chunk for _ in range(10))
        yield b"}"

    streamed = client.post(f"/collect/{site.site_key}", content=body(), headers=HEADERS)
    assert streamed.status_code == 413
    assert "limit" in streamed.json()["detail"]
    assert streamed.headers["access-control-allow-origin"] == ORIGIN  # the tracker may read why


def test_collect_speaks_http_properly(client: TestClient[Any], site: SiteHandle) -> None:
    preflight = client.options(
        f"/collect/{site.site_key}", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-length" not in preflight.headers  # RFC 9110: none on 204
    foreign = client.options(f"/collect/{site.site_key}", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    wrong_method = client.get(f"/collect/{site.site_key}", headers=HEADERS)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST, OPTIONS"
    for path in ("/collect", "/collect/", f"/collect/{site.site_key}/extra", f"/collect{site.site_key}"):
        assert client.post(path, content=batch(hit()), headers=HEADERS).status_code == 404, path
    answer = post(client, site, batch(hit()))
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_unknown_origin_and_unknown_site_are_refused(client: TestClient[Any], site: SiteHandle) -> None:
    foreign = post(client, site, batch(hit()), {**HEADERS, "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert "not allowed" in foreign.json()["detail"]
    no_origin = {k: v for k, v in HEADERS.items() if k != "Origin"}
    assert post(client, site, batch(hit()), no_origin).status_code == 403
    unknown = client.post("/collect/no-such-site", content=batch(hit()), headers=HEADERS)
    assert unknown.status_code == 404


def test_do_not_track_is_honoured(client: TestClient[Any], site: SiteHandle) -> None:
    response = post(client, site, batch(hit()), {**HEADERS, "Sec-GPC": "1"})
    assert response.status_code == 204


def test_tracker_script_is_configured_and_cacheable(client: TestClient[Any], site: SiteHandle) -> None:
    response = client.get(f"/t/{site.site_key}.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert f"/collect/{site.site_key}" in response.text
    assert "__TRAILMARK_CONFIG__" not in response.text
    assert response.num_bytes_downloaded <= 4096  # what goes over the wire, gzipped
    assert response.headers["content-encoding"] == "gzip"
    etag = response.headers["etag"]
    assert client.get(f"/t/{site.site_key}.js", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/t/unknown-site.js").status_code == 404


def forged_tokens(genuine: str, tenant_id: uuid.UUID, visitor_id: uuid.UUID) -> Iterator[str]:
    """Every way we know to fake a visitor cookie."""
    header, payload, signature = genuine.split(".")
    for position in range(0, len(genuine), 3):  # bit flips all along the token
        flipped = chr(ord(genuine[position]) ^ 1)
        yield genuine[:position] + flipped + genuine[position + 1 :]
    wrong_key = TokenSigner((SigningKey(get_settings().signing_keys[0].key_id, os.urandom(32)),))
    yield wrong_key.sign(VISITOR_PURPOSE, tenant_id, visitor_id)
    unknown_kid = TokenSigner((SigningKey("zz9", os.urandom(32)),))
    yield unknown_kid.sign(VISITOR_PURPOSE, tenant_id, visitor_id)
    real = TokenSigner(get_settings().signing_keys)
    yield real.sign("email-link", tenant_id, visitor_id)  # right key, other purpose
    yield real.sign(VISITOR_PURPOSE, uuid.uuid4(), visitor_id)  # right key, other tenant

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    yield f"{b64({'alg': 'none'})}.{payload}."
    yield f"{b64({'alg': 'HS512', 'kid': 't2'})}.{payload}.{signature}"
    yield f"{header}.{payload}"
    yield ""


def test_forged_visitor_tokens_never_attach_to_the_visitor(client: TestClient[Any], site: SiteHandle) -> None:
    first = post(client, site, batch(hit())).json()
    victim = first["visitor_id"]
    attempts = 0
    for forged in forged_tokens(first["token"], site.tenant.tenant_id, uuid.UUID(victim)):
        body = post(client, site, batch(hit(), token=forged)).json()
        assert body["visitor_id"] != victim, forged
        attempts += 1
        # The same forgery as a cookie is not trusted either.
        client.cookies.set("tm_vid", forged)
        assert post(client, site, batch(hit())).json()["visitor_id"] != victim
        client.cookies.clear()
    assert attempts > 50


def test_a_token_of_an_older_key_is_reissued_for_the_same_visitor(client: TestClient[Any], site: SiteHandle) -> None:
    older = TokenSigner(get_settings().signing_keys[1:])  # the configured previous key
    visitor = uuid.uuid4()
    old_token = older.sign(VISITOR_PURPOSE, site.tenant.tenant_id, visitor)
    body = post(client, site, batch(hit(), token=old_token)).json()
    assert body["visitor_id"] == str(visitor)
    assert body["token"] != old_token


def test_server_sets_an_httponly_cookie_only_when_collect_is_on_the_page_site(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    own = make_site(make_tenant("Proxy"), ["http://testserver.local"])
    proxied = post(
        client,
        own,
        batch(hit()),
        {**HEADERS, "Origin": "http://testserver.local", "Host": "testserver.local"},
    )
    cookie = proxied.headers["set-cookie"]
    assert "tm_vid=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    cross_site = make_site(make_tenant("Cross"), [ORIGIN])
    assert "set-cookie" not in post(client, cross_site, batch(hit())).headers


# --- ingest through the real worker ------------------------------------------------------------


@pytest.mark.usefixtures("pipeline")
def test_the_same_batch_sent_three_times_is_stored_once(client: TestClient[Any], site: SiteHandle) -> None:
    body = batch(*(hit(f"/p{i}") for i in range(10)))
    for _ in range(3):
        assert post(client, site, body).status_code == 202
    wait_stored(site.tenant.tenant_id, 10)
    time.sleep(2)  # two more drain cycles: still 10
    assert stored_visits(site.tenant.tenant_id) == 10
    (visitor,) = visitors_of(client, site.tenant)
    assert visitor["visit_count"] == 10


@pytest.mark.usefixtures("pipeline")
def test_first_touch_is_kept_and_last_touch_follows_campaigns(client: TestClient[Any], site: SiteHandle) -> None:
    landing = hit(
        "/?utm_source=google&utm_medium=cpc&gclid=G1&ref=p7",
        utm={"source": "google", "medium": "cpc"},
        click_ids={"gclid": "G1"},
        partner_code="p7",
        referrer="https://www.google.com/",
    )
    token = post(client, site, batch(landing)).json()["token"]
    plain = hit("/pricing", referrer=f"{ORIGIN}/")  # internal navigation: not a touch
    email = hit("/blog?utm_source=newsletter", utm={"source": "newsletter", "medium": "email"})
    email["ts"] += 1000
    plain["ts"] += 500
    post(client, site, batch(plain, token=token))
    post(client, site, batch(email, token=token))
    wait_stored(site.tenant.tenant_id, 3)
    (visitor,) = visitors_of(client, site.tenant)
    assert visitor["first_touch"]["utm"] == {"source": "google", "medium": "cpc"}
    assert visitor["first_touch"]["click_ids"]["gclid"]["value"] == "G1"
    assert visitor["first_touch"]["partner_code"] == "p7"
    assert visitor["first_touch"]["landing_page"].endswith("/?utm_source=google&utm_medium=cpc&gclid=G1&ref=p7")
    assert visitor["last_touch"]["utm"]["source"] == "newsletter"

    detail = client.get(f"/api/v1/visitors/{visitor['id']}", headers=site.tenant.headers).json()
    assert [v["path"] for v in detail["visits"]] == ["/", "/pricing", "/blog"]


@pytest.mark.usefixtures("pipeline")
def test_a_referrer_from_another_host_is_a_touch_and_the_own_host_is_not(
    client: TestClient[Any], site: SiteHandle
) -> None:
    landing = hit("/?utm_source=google", utm={"source": "google"})
    token = post(client, site, batch(landing)).json()["token"]
    article = hit("/guide", referrer="https://news.example/article?id=1")
    article["ts"] = landing["ts"] + 1000
    internal = hit("/pricing", referrer="https://SHOP.example:443/guide")  # the same host, spelled otherwise
    internal["ts"] = landing["ts"] + 2000
    post(client, site, batch(article, internal, token=token))
    wait_stored(site.tenant.tenant_id, 3)
    (visitor,) = visitors_of(client, site.tenant)
    assert visitor["first_touch"]["utm"] == {"source": "google"}
    assert visitor["last_touch"]["referrer"] == "https://news.example/article?id=1"
    assert visitor["last_touch"]["landing_page"] == f"{ORIGIN}/guide"
    expected_at = datetime.fromtimestamp(article["ts"] / 1000, UTC)
    assert datetime.fromisoformat(visitor["last_touch"]["at"]) == expected_at


@pytest.mark.usefixtures("pipeline")
def test_bots_are_stored_flagged_and_kept_out_of_attribution(client: TestClient[Any], site: SiteHandle) -> None:
    googlebot = {
        **HEADERS,
        "User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    }
    post(client, site, batch(hit("/?utm_source=x", utm={"source": "x"})), googlebot)
    wait_stored(site.tenant.tenant_id, 1)
    (visitor,) = visitors_of(client, site.tenant)
    assert visitor["is_bot"] is True
    assert visitor["first_touch"] is None
    visits = client.get("/api/v1/visits?bot=true", headers=site.tenant.headers).json()["items"]
    assert visits[0]["is_bot"] is True
    assert "crawler" in visits[0]["bot_reason"]
    assert client.get("/api/v1/visits?bot=false", headers=site.tenant.headers).json()["items"] == []


@pytest.mark.usefixtures("pipeline")
def test_visits_of_a_visitor_linked_to_a_contact_carry_the_contact(client: TestClient[Any], site: SiteHandle) -> None:
    first = post(client, site, batch(hit())).json()
    wait_stored(site.tenant.tenant_id, 1)
    with tenant_session(site.tenant.tenant_id) as session:
        contact_id = create_contact(session, ContactChanges(email="linked@example.com")).id
        session.execute(text("UPDATE visitors SET contact_id = :c"), {"c": contact_id})
    post(client, site, batch(hit("/later"), token=first["token"]))
    wait_stored(site.tenant.tenant_id, 2)
    visits = client.get("/api/v1/visits", headers=site.tenant.headers).json()["items"]
    assert visits[0]["path"] == "/later"
    assert visits[0]["contact_id"] == str(contact_id)


@pytest.mark.usefixtures("pipeline")
def test_visits_filters_and_cursor_pagination(client: TestClient[Any], site: SiteHandle) -> None:
    hits = [hit(f"/n{i}", utm={"source": "a" if i % 2 else "b"}) for i in range(25)]
    for i, h in enumerate(hits):
        h["ts"] += i
    for start in range(0, 25, 5):
        post(client, site, batch(*hits[start : start + 5]))
    wait_stored(site.tenant.tenant_id, 25)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4, "utm_source": "a"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/visits", params=params, headers=site.tenant.headers).json()
        seen += [v["path"] for v in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"/n{i}" for i in reversed(range(25)) if i % 2]
    bad = client.get("/api/v1/visits", params={"cursor": "garbage"}, headers=site.tenant.headers)
    assert bad.status_code == 422
    assert client.get("/api/v1/visits", params={"limit": 0}, headers=site.tenant.headers).status_code == 400


def test_sites_api_validates_and_hides_other_tenants(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    owner, other = make_tenant("Owner"), make_tenant("Other")
    bad = client.post("/api/v1/sites", json={"name": "S", "allowed_origins": ["not a url"]}, headers=owner.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"].startswith("allowed_origins")  # allowed_origins[0]
    created = client.post(
        "/api/v1/sites",
        json={"name": "Shop", "allowed_origins": ["https://Shop.Example:443/"], "partner_params": ["aff"]},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    site = created.json()
    assert site["allowed_origins"] == ["https://shop.example"]
    assert site["snippet"] == f'<script async src="{get_settings().base_url}/t/{site["site_key"]}.js"></script>'
    changed = client.patch(f"/api/v1/sites/{site['id']}", json={"bot_policy": "drop"}, headers=owner.headers)
    assert changed.json()["bot_policy"] == "drop"
    assert changed.json()["partner_params"] == ["aff"]
    assert client.get(f"/api/v1/sites/{site['id']}", headers=other.headers).status_code == 404
    assert client.get("/api/v1/sites", headers=other.headers).json() == []
    assert client.delete(f"/api/v1/sites/{site['id']}", headers=owner.headers).status_code == 204
    assert client.get(f"/api/v1/sites/{site['id']}", headers=owner.headers).status_code == 404


# --- faults: a Redis outage, a full buffer, a killed worker ------------------------------------


def send(base_url: str, site: SiteHandle, count: int, per_batch: int = 5) -> tuple[int, list[httpx.Response]]:
    """Send ``count`` batches; returns how many hits were acknowledged (202) and the refusals."""
    accepted, refused = 0, []
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=10) as http:
        for _ in range(count):
            response = http.post(f"/collect/{site.site_key}", content=batch(*(hit() for _ in range(per_batch))))
            if response.status_code == 202:
                accepted += per_batch
            else:
                refused.append(response)
    return accepted, refused


@pytest.mark.slow
def test_redis_down_means_503_and_everything_acknowledged_is_stored_after(
    site: SiteHandle, private_redis: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    url, down, up = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=url)
    try:
        before, refused = send(api.base_url, site, 40)
        assert refused == []
        down()
        during, refused = send(api.base_url, site, 5)
        assert during == 0
        assert {r.status_code for r in refused} == {503}
        assert all(int(r.headers["retry-after"]) > 0 for r in refused)
        up()  # AOF brings back what was acknowledged before the outage
        after, refused = send(api.base_url, site, 40)
        assert refused == []
    finally:
        api.stop()
    worker, beat = start_worker(TRAILMARK_REDIS_URL=url), start_beat(TRAILMARK_REDIS_URL=url)
    try:
        wait_stored(site.tenant.tenant_id, before + after)
    finally:
        stop(beat)
        stop(worker)


@pytest.mark.slow
def test_a_full_buffer_answers_503_instead_of_growing(
    site: SiteHandle, private_redis: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    url, _, _ = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=url, TRAILMARK_INGEST_MAX_BACKLOG="10")
    try:
        accepted, refused = send(api.base_url, site, 15, per_batch=1)
    finally:
        api.stop()
    assert accepted == 10
    assert len(refused) == 5
    assert {r.status_code for r in refused} == {503}
    assert "full" in refused[0].json()["detail"]


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    site: SiteHandle, private_redis: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    url, _, _ = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=url)
    try:
        accepted, refused = send(api.base_url, site, 2000, per_batch=5)
    finally:
        api.stop()
    assert refused == []
    env = {"TRAILMARK_REDIS_URL": url, "TRAILMARK_INGEST_CLAIM_IDLE_MS": "2000"}
    worker, beat = start_worker(**env), start_beat(**env)
    try:
        wait_until(lambda: stored_visits(site.tenant.tenant_id) > 0, 60, "ingest to start")
        for process in [*psutil.Process(worker.pid).children(recursive=True), psutil.Process(worker.pid)]:
            process.send_signal(signal.SIGKILL)  # mid-batch: no warm shutdown, no acknowledgements
        worker.wait(10)
        partial = stored_visits(site.tenant.tenant_id)
        assert 0 < partial < accepted
        worker = start_worker(**env)
        wait_stored(site.tenant.tenant_id, accepted, timeout=120)
    finally:
        stop(beat)
        stop(worker)
    with tenant_session(site.tenant.tenant_id) as session:
        counted = session.execute(text("SELECT sum(visit_count) FROM visitors")).scalar()
        distinct = session.execute(text("SELECT count(DISTINCT hit_id) FROM visits")).scalar()
    assert counted == distinct == accepted
