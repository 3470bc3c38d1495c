"""What collect acknowledges is stored, whatever a browser puts in it: text PostgreSQL cannot hold is
stripped from the hit, anything else ingest could not store is refused at collect, and nothing
acknowledged ends in the dead letters because of its content. Through the real API code, Redis, Celery
ingest worker and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tenants.tracking.buffer import dead_letters
from tenants.tracking.hits import MAX_PROPS_DEPTH
from tests.conftest import SiteHandle, TenantHandle, make_site, wait_stored

pytestmark = pytest.mark.usefixtures("pipeline")

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
HEADERS = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}


@pytest.fixture
def site(make_tenant: Callable[..., TenantHandle]) -> SiteHandle:
    return make_site(make_tenant("Content"), [ORIGIN])


def collect(client: TestClient[Any], site: SiteHandle, body: str | bytes) -> Any:
    return client.post(f"/collect/{site.site_key}", content=body, headers=HEADERS)


def visits(client: TestClient[Any], site: SiteHandle) -> list[dict[str, Any]]:
    response = client.get("/api/v1/visits", params={"limit": 500}, headers=site.tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def dead_letters_of(tenant_id: UUID) -> list[str]:
    from tenants.redis_store import get_redis

    return [
        letter.reason for letter in dead_letters(get_redis(), 100_000, shard_count=1) if letter.tenant_id == tenant_id
    ]


def test_a_hit_with_nul_and_lone_surrogates_is_stored_without_them(client: TestClient[Any], site: SiteHandle) -> None:
    # As a browser's JSON.stringify writes them: \u0000, and a surrogate without its other half (a
    # title cut inside an emoji). A whole emoji (a surrogate pair) and an escaped backslash stay.
    hit_id = str(uuid.uuid4())
    raw_hit = (
        "{"
        f'"hit_id": "{hit_id}", "ts": {int(time.time() * 1000)},'
        f'"url": "{ORIGIN}/sale?x=1\\u0000", "path": "/sale\\u0000",'
        '"title": "Big\\u0000 sale \\ud83d\\ude00 now\\ud83d", "referrer": "https://news.example/\\udc00a",'
        '"utm": {"source": "mail\\u0000", "campaign": "\\ud800spring"},'
        '"click_ids": {"fbclid": "Ab\\u0000C", "gclid": "G\\udfff-1"},'
        '"cookies": {"_fbp": "fb.1.1.\\u00002"},'
        '"type": "event", "event_name": "sign\\u0000up",'
        '"props": {"plan\\u0000": "gold\\u0000", "list": ["a\\ud83d", {"deep\\u0000": "\\\\u0000"}]}'
        "}"
    )
    response = collect(client, site, '{"v": 1, "hits": [' + raw_hit + "]}")
    assert response.status_code == 202, response.text

    wait_stored(site.tenant.tenant_id, 1)
    [stored] = visits(client, site)
    assert stored["hit_id"] == hit_id
    assert stored["url"] == f"{ORIGIN}/sale?x=1"
    assert stored["path"] == "/sale"
    assert stored["title"] == "Big sale \N{GRINNING FACE} now"
    assert stored["referrer"] == "https://news.example/a"
    assert stored["utm"] == {"source": "mail", "campaign": "spring"}
    assert stored["click_ids"] == {"fbclid": "AbC", "gclid": "G-1"}
    assert stored["ad_cookies"] == {"_fbp": "fb.1.1.2"}
    assert stored["event_name"] == "signup"
    assert stored["props"] == {"plan": "gold", "list": ["a", {"deep": "\\u0000"}]}
    assert dead_letters_of(site.tenant.tenant_id) == []


def test_what_ingest_could_not_store_is_refused_by_collect_with_the_reason(
    client: TestClient[Any], site: SiteHandle
) -> None:
    def hit(**fields: Any) -> dict[str, Any]:
        return {"hit_id": str(uuid.uuid4()), "ts": int(time.time() * 1000), "url": f"{ORIGIN}/", **fields}

    def nested(depth: int) -> Any:
        return {"a": nested(depth - 1)} if depth > 1 else {"a": 1}

    deep = collect(client, site, json.dumps({"v": 1, "hits": [hit(props=nested(MAX_PROPS_DEPTH + 1))]}))
    assert deep.status_code == 400
    assert "hits[0].props" in deep.json()["detail"]
    # Far deeper (a few kilobytes): still a 400, never a 500 from a recursion limit.
    for depth in (450, 5000):
        props = '{"a":' * depth + "1" + "}" * depth
        body = '{"v": 1, "hits": [' + json.dumps(hit())[:-1] + ', "props": ' + props + "}]}"
        assert collect(client, site, body).status_code == 400
    broken_host = collect(client, site, json.dumps({"v": 1, "hits": [hit(url="http://[oops/")]}))
    assert broken_host.status_code == 400
    assert "hits[0].url" in broken_host.json()["detail"]
    huge_number = collect(client, site, '{"v": 1, "hits": [' + json.dumps(hit())[:-1] + ', "props": {"n": 1e999}}]}')
    assert huge_number.status_code == 400
    # A broken Origin or Referer is no origin at all: 403, not a crash.
    for header in ({"Origin": "http://[oops"}, {"Origin": "null", "Referer": "http://[oops/page"}):
        answer = client.post(
            f"/collect/{site.site_key}", content=json.dumps({"hits": [hit()]}), headers={**HEADERS, **header}
        )
        assert answer.status_code == 403, answer.text
    # Within the bounds, the same hit is stored.
    fine = collect(client, site, json.dumps({"v": 1, "hits": [hit(props=nested(MAX_PROPS_DEPTH - 1))]}))
    assert fine.status_code == 202, fine.text
    wait_stored(site.tenant.tenant_id, 1)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_short_text = st.text(max_size=40)  # any code point: NUL, controls, lone surrogates, astral characters
_now_ms = int(time.time() * 1000)


@st.composite
def _hits(draw: st.DrawFn) -> dict[str, Any]:
    day = 24 * 3600 * 1000
    hit: dict[str, Any] = {
        "hit_id": str(uuid.uuid4()),  # never drawn: a repeated id would (rightly) be stored once
        # Mostly good times and URLs, so that many batches (all of whose hits must be good) get through.
        "ts": draw(st.integers(_now_ms - 29 * day, _now_ms + day // 2))
        if draw(st.integers(0, 3))
        else draw(st.integers()),
        "url": draw(st.sampled_from([f"{ORIGIN}/"] * 6 + ["http://x.example", "https:", "ftp://a/", "http://[oops"]))
        + draw(_short_text),
    }
    optional = {
        "type": st.sampled_from(["pageview", "event", "other"]),
        "path": _short_text,
        "title": _short_text,
        "referrer": _short_text,
        "utm": st.dictionaries(st.sampled_from(["source", "medium", "campaign", "term", "content", "id"]), _short_text),
        "click_ids": st.dictionaries(st.sampled_from(["fbclid", "gclid", "msclkid", "ttclid"]), _short_text),
        "cookies": st.dictionaries(st.sampled_from(["_fbc", "_fbp", "_ttp"]), _short_text),
        "partner_code": _short_text,
        "partner_sid": _short_text,
        "lang": st.text(max_size=10),
        "screen": st.text(max_size=10),
        "event_name": _short_text,
        "props": st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            hit[name] = draw(strategy)
    return hit


def test_whatever_collect_acknowledges_is_stored_and_never_dead_lettered(
    client: TestClient[Any], site: SiteHandle
) -> None:
    """Fuzzed hits (any text, any JSON props, timestamps and URLs good and bad): collect answers a 4xx
    or acknowledges, never a 5xx, and every hit it acknowledged reaches the visits table."""
    acknowledged: list[str] = []

    # Derandomized: every run sends the same examples, so how many get through does not vary from run to run.
    @settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(hits=st.lists(_hits(), min_size=1, max_size=3))
    def send(hits: list[dict[str, Any]]) -> None:
        # json.dumps writes a lone surrogate as \udXXX, as browsers do.
        response = collect(client, site, json.dumps({"v": 1, "hits": hits}))
        assert response.status_code in (202, 400, 413), response.text
        if response.status_code == 202:
            acknowledged.extend(hit["hit_id"] for hit in hits)

    send()
    assert len(acknowledged) > 20, "the fuzzer should get plenty of hits through"
    wait_stored(site.tenant.tenant_id, len(acknowledged), timeout=120)
    assert dead_letters_of(site.tenant.tenant_id) == []


def test_a_stale_fbc_sent_with_a_new_fbclid_is_stored_as_the_new_click(
    client: TestClient[Any], site: SiteHandle
) -> None:
    """A browser that still runs an older tracker sends the first ad click's ``_fbc`` with the second
    click's ``fbclid``; the stored visit follows Meta's rule anyway (the click's time, the new fbclid)."""
    now = int(time.time() * 1000)

    def hit(fbclid: str | None, fbc: str) -> dict[str, Any]:
        click_ids = {"fbclid": fbclid} if fbclid else {}
        return {
            "hit_id": str(uuid.uuid4()),
            "ts": now,
            "url": f"{ORIGIN}/",
            "click_ids": click_ids,
            "cookies": {"_fbc": fbc},
        }

    stale = hit("SECOND", "fb.1.1554763741205.FIRST")
    current = hit("AbCd", "fb.1.1554763741205.AbCd.AQYBAAMA")  # Meta's 5-segment form passes through
    without_click = hit(None, "fb.1.1554763741205.FIRST")
    assert collect(client, site, json.dumps({"v": 1, "hits": [stale, current, without_click]})).status_code == 202
    wait_stored(site.tenant.tenant_id, 3)
    stored = {visit["hit_id"]: visit["ad_cookies"]["_fbc"] for visit in visits(client, site)}
    assert stored[stale["hit_id"]] == f"fb.1.{now}.SECOND"
    assert stored[current["hit_id"]] == "fb.1.1554763741205.AbCd.AQYBAAMA"
    assert stored[without_click["hit_id"]] == "fb.1.1554763741205.FIRST"


def test_a_visit_from_a_peer_without_an_ip_address_is_stored_without_one(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    """A site that keeps full addresses, reached through a peer that has none (a Unix socket; here the
    test client, whose peer is called "testclient"): the visit is stored, without an address."""
    site = make_site(make_tenant("Sockets"), [ORIGIN], truncate_ip=False)
    hit = {"hit_id": str(uuid.uuid4()), "ts": int(time.time() * 1000), "url": f"{ORIGIN}/"}
    assert collect(client, site, json.dumps({"v": 1, "hits": [hit]})).status_code == 202
    wait_stored(site.tenant.tenant_id, 1)
    assert dead_letters_of(site.tenant.tenant_id) == []
