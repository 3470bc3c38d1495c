"""Delivering conversions to ad platforms (real local fakes that check every request): each conversion reaches
each platform once, with its click ids, through rate limits, outages, a refused event, an expired token and a
worker killed mid-batch; never for a browser that said no; never with a token in an answer or a log line."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import (
    TenantHandle,
    make_site,
    start_api_server,
    start_beat,
    start_worker,
    stop,
    wait_stored,
    wait_until,
)
from tests.support.ad_platforms import FakeAdPlatforms, Scripted
from tests.support.conversions import (
    ORIGIN,
    Browser,
    connect_meta_and_google,
    make_form,
    queue_conversions,
    send_to_google,
)
from tests.support.dashboard import login_http

pytestmark = pytest.mark.usefixtures("pipeline")

WEBINAR = {"events": {"custom": ["webinar_signup"]}}
"""Integrations that take the builder's custom conversions."""


def deliveries(client: Any, tenant: TenantHandle) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(
            "/api/v1/conversions",
            params={"limit": 200, **({"cursor": cursor} if cursor else {})},
            headers=tenant.headers,
        ).json()
        items += [d | {"event_id": c["event_id"]} for c in page["items"] for d in c["deliveries"]]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def settled(client: Any, tenant: TenantHandle, expected: int, timeout: float = 120) -> list[dict[str, Any]]:
    """The deliveries once none is queued any more."""

    def done() -> list[dict[str, Any]] | None:
        found = deliveries(client, tenant)
        return found if len(found) == expected and all(d["status"] != "queued" for d in found) else None

    return list(wait_until(done, timeout, f"{expected} deliveries settled", interval=0.5))


def test_monicas_lead_and_purchase_reach_meta_with_her_fbclid_and_google_with_her_gclid(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Monicadelivered")
    site = make_site(tenant, [ORIGIN])
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms)
    form = make_form(client, site.site_id, tenant.headers)
    monica = Browser(client, site.site_key)
    monica.view("/?utm_source=facebook&fbclid=IwAR-Monica-Landing_1")
    monica.view("/pricing?gclid=Cj0KCQ-Monica-gclid")
    wait_stored(tenant.tenant_id, 2)
    monica.submit(form["form_key"], {"email": "Monica@Example.com", "phone": "+1 650 555 1212"})
    bought = client.post(
        "/api/v1/purchases",
        json={"external_id": "order-2001", "amount": 12900, "currency": "EUR", "visitor_token": monica.token},
        headers=tenant.headers,
    )
    assert bought.status_code == 201
    statuses = settled(client, tenant, 4)
    assert {d["status"] for d in statuses} == {"sent"}

    at_meta = ad_platforms.accepted_for(shop.meta_key)
    assert sorted(e["event_name"] for e in at_meta.values()) == ["Lead", "Purchase"]
    for event in at_meta.values():
        assert event["user_data"]["fbc"].startswith("fb.1.") and event["user_data"]["fbc"].endswith(
            ".IwAR-Monica-Landing_1"
        )
        assert "fbp" not in event["user_data"]  # her browser had no _fbp cookie: never invented
    purchase = next(e for e in at_meta.values() if e["event_name"] == "Purchase")
    assert purchase["custom_data"] == {"value": 129.0, "currency": "EUR", "order_id": "order-2001"}
    at_google = ad_platforms.accepted_for(shop.google_key)
    assert sorted(c["conversionAction"].rsplit("/", 1)[1] for c in at_google.values()) == ["111", "222"]
    assert {c["gclid"] for c in at_google.values()} == {"Cj0KCQ-Monica-gclid"}
    assert all(c["userIdentifiers"][1] == {"hashedPhoneNumber": hashing_phone()} for c in at_google.values())

    # Her timeline shows both conversions with their status at each platform.
    contact_id = client.get("/api/v1/conversions", headers=tenant.headers).json()["items"][0]["contact_id"]
    timeline = client.get(f"/api/v1/contacts/{contact_id}/timeline", headers=tenant.headers).json()["items"]
    shown = [e for e in timeline if e["kind"] == "conversion"]
    assert sorted(e["event_name"] for e in shown) == ["lead", "purchase"]
    assert all({(d["platform"], d["status"]) for d in e["deliveries"]} == {("meta", "sent"), ("google_ads", "sent")}
               for e in shown)  # fmt: skip


def hashing_phone() -> str:
    from tenants.conversions import hashing

    digest = hashing.sha256("+16505551212")
    assert digest is not None
    return digest


def test_a_gpc_browsers_conversion_is_skipped_and_reaches_no_platform(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Gpcdelivered")
    site = make_site(tenant, [ORIGIN])
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms)
    form = make_form(client, site.site_id, tenant.headers)
    Browser(client, site.site_key, headers={"Sec-GPC": "1"}).submit(form["form_key"], {"email": "gpc@example.com"})
    statuses = settled(client, tenant, 2)
    assert {(d["status"], d["reason"]) for d in statuses} == {
        ("skipped", "the browser sent Global Privacy Control, which the site honours")
    }
    time.sleep(3)  # a flush or two later, still nothing sent
    assert ad_platforms.accepted_for(shop.meta_key) == {} and ad_platforms.accepted_for(shop.google_key) == {}


def test_one_refused_event_of_a_batch_of_500_fails_alone_and_the_other_499_are_delivered(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Meta refuses a whole request for one bad event: the batch is split until that event stands alone."""
    tenant = make_tenant("Fivehundred")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    event_ids = queue_conversions(tenant.tenant_id, [shop.meta["id"]], 500)
    ad_platforms.refused_ids.add(event_ids[137])
    statuses = settled(client, tenant, 500)
    failed = [d for d in statuses if d["status"] == "failed"]
    assert [d["event_id"] for d in failed] == [event_ids[137]]
    assert "invalid parameter" in failed[0]["reason"]
    assert len(ad_platforms.accepted_for(shop.meta_key)) == 499
    assert max(ad_platforms.batch_sizes[shop.meta_key]) <= 1000


def test_rate_limits_and_outages_are_retried_until_delivered_once(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Retrying")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    ad_platforms.script(shop.meta_key, Scripted(429, {"error": {"code": 17, "message": "User request limit reached"}},
                                                headers={"Retry-After": "1"}))  # fmt: skip
    ad_platforms.script(
        shop.meta_key, Scripted(503, {"error": {"code": 2, "message": "Service temporarily unavailable"}})
    )
    ad_platforms.script(shop.google_key, Scripted(500, {"error": {"code": 500, "status": "INTERNAL"}}, times=2))
    event_ids = queue_conversions(tenant.tenant_id, [shop.meta["id"], shop.google["id"]], 30)
    statuses = settled(client, tenant, 60, timeout=180)
    assert {d["status"] for d in statuses} == {"sent"}
    assert all(d["attempts"] >= 2 for d in statuses)
    assert len(ad_platforms.accepted_for(shop.meta_key)) == 30
    assert set(ad_platforms.accepted_for(shop.google_key)) == set(event_ids)


def _integration(client: Any, tenant: TenantHandle, integration_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/integrations/{integration_id}", headers=tenant.headers).json())


def test_a_failing_destination_backs_off_as_a_whole_while_the_others_flush(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Meta answers 503 with Retry-After: an hour. Meta as a whole waits that hour: the conversions queued after
    the failure are not tried on the next flushes (one request in all), while Google receives every one."""
    from datetime import UTC, datetime, timedelta

    tenant = make_tenant("Backedoff")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    outage = {"error": {"code": 2, "message": "Service temporarily unavailable"}}
    ad_platforms.script(shop.meta_key, Scripted(503, outage, times=1000, headers={"Retry-After": "3600"}))
    first = queue_conversions(tenant.tenant_id, [shop.meta["id"], shop.google["id"]], 3)

    def backed_off() -> dict[str, Any] | None:
        found = _integration(client, tenant, shop.meta["id"])
        return found if found["backoff_until"] else None

    meta = wait_until(backed_off, 60, "Meta to be backed off")
    assert datetime.fromisoformat(meta["backoff_until"]) > datetime.now(UTC) + timedelta(minutes=59)
    assert meta["status"] == "active" and "503" in meta["last_failure"]
    later = queue_conversions(tenant.tenant_id, [shop.meta["id"], shop.google["id"]], 3)
    wait_until(lambda: set(first + later) <= set(ad_platforms.accepted_for(shop.google_key)), 60, "Google to get all")
    time.sleep(4)  # two flush delays and more: the later conversions were due, Meta's back-off kept them back
    assert ad_platforms.requests[shop.meta_key] == 1
    at_meta = [d for d in deliveries(client, tenant) if d["platform"] == "meta"]
    assert {d["status"] for d in at_meta} == {"queued"} and len(at_meta) == 6
    assert sorted(d["attempts"] for d in at_meta) == [0, 0, 0, 1, 1, 1]


def test_a_destination_that_answers_again_ends_its_back_off(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Two 429s in a row, then Meta takes the batch: delivered once, and the destination is no longer backed off."""
    tenant = make_tenant("Recovering")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    limit = {"error": {"code": 17, "message": "User request limit reached"}}
    ad_platforms.script(shop.meta_key, Scripted(429, limit, times=2))
    event_ids = queue_conversions(tenant.tenant_id, [shop.meta["id"]], 4)
    assert {d["status"] for d in settled(client, tenant, 4, timeout=120)} == {"sent"}
    assert ad_platforms.requests[shop.meta_key] >= 3  # the two refused, then as the retries came due
    assert {e["event_id"] for e in ad_platforms.accepted_for(shop.meta_key).values()} == set(event_ids)
    assert set(ad_platforms.received_for(shop.meta_key).values()) == {1}
    meta = _integration(client, tenant, shop.meta["id"])
    assert (meta["backoff_until"], meta["last_failure"]) == (None, None)


def test_a_destination_whose_sender_raises_neither_blocks_the_others_nor_runs_on_every_flush(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """A broken destination (its pixel id lost: the sender raises) comes first in the flush; the next one is
    delivered all the same, and the broken one is backed off. In a batch, a payload that cannot be built fails
    alone, with its reason, and the rest go."""
    from sqlalchemy import text

    from tenants.isolation import tenant_session

    tenant = make_tenant("Guarded")
    broken = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    working = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    queue_conversions(tenant.tenant_id, [broken.meta["id"]], 2)  # queued first: first in the flush
    with tenant_session(tenant.tenant_id) as session:
        session.execute(
            text("UPDATE integrations SET settings = settings - 'pixel_id' WHERE id = :i"), {"i": broken.meta["id"]}
        )
    (unbuildable,) = queue_conversions(tenant.tenant_id, [working.meta["id"]], 1, clicked_at="not a time")
    good = queue_conversions(tenant.tenant_id, [working.meta["id"]], 3)

    def working_done() -> list[dict[str, Any]] | None:
        found = [d for d in deliveries(client, tenant) if d["integration_id"] == working.meta["id"]]
        return found if len(found) == 4 and all(d["status"] != "queued" for d in found) else None

    statuses = {d["event_id"]: d for d in wait_until(working_done, 60, "the working destination to flush")}
    assert statuses[unbuildable]["status"] == "failed"
    assert statuses[unbuildable]["reason"].startswith("payload cannot be built")
    assert all(statuses[e]["status"] == "sent" for e in good)
    assert set(ad_platforms.accepted_for(working.meta_key)) == {f"webinar_signup:{e}" for e in good}
    failing = wait_until(
        lambda: (found := _integration(client, tenant, broken.meta["id"]))["backoff_until"] and found,
        30,
        "the broken destination to be backed off",
    )
    assert failing["last_failure"] == "the sender failed: KeyError"
    assert {d["status"] for d in deliveries(client, tenant) if d["integration_id"] == broken.meta["id"]} == {"queued"}


def test_an_expired_token_pauses_the_integration_until_the_tenant_reconnects(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Expiring")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    ad_platforms.meta_tokens[shop.meta["pixel_id"]] = "EAA-a-newer-token-the-shop-has-not-stored"
    queue_conversions(tenant.tenant_id, [shop.meta["id"]], 5)

    def paused() -> dict[str, Any] | None:
        found = client.get(f"/api/v1/integrations/{shop.meta['id']}", headers=tenant.headers).json()
        return found if found["status"] == "paused" else None

    integration = wait_until(paused, 60, "the integration to pause")
    assert "Meta refused the access token" in integration["paused_reason"]
    assert {d["status"] for d in deliveries(client, tenant)} == {"queued"}  # waiting, not lost
    reconnected = client.patch(
        f"/api/v1/integrations/{shop.meta['id']}",
        json={"access_token": "EAA-a-newer-token-the-shop-has-not-stored"},
        headers=tenant.headers,
    )
    assert reconnected.json()["status"] == "active"
    assert {d["status"] for d in settled(client, tenant, 5)} == {"sent"}


def _sender_pid(port: int) -> int:
    """The worker process whose connection to the fake platform is open (the one sending)."""
    for process in psutil.process_iter(["cmdline"]):
        if "worker" not in " ".join(process.info["cmdline"] or []):
            continue
        try:
            if any(c.raddr and c.raddr.port == port for c in process.net_connections(kind="tcp")):
                return int(process.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    raise AssertionError("no worker is connected to the fake platform")


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_the_platform_counts_each_event_once(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """kill -9 after Meta took the batch and before the sender recorded its answer: the batch is its sender's
    until the lease runs out (flushes meanwhile leave it), then it is sent once more with the same event ids,
    which Meta deduplicates: every conversion delivered, none counted twice, nothing re-sent early."""
    from tenants.conversions.delivery import lease_seconds

    tenant = make_tenant("Killed")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    gate = ad_platforms.hold.setdefault(shop.meta_key, threading.Event())
    ad_platforms.holding.clear()
    event_ids = queue_conversions(tenant.tenant_id, [shop.meta["id"]], 200)
    wait_until(ad_platforms.holding.is_set, 60, "the batch to reach Meta")
    time.sleep(2)  # flushes run while the batch is in flight: none may take it
    port = ad_platforms.server.server_address[1]
    os.kill(_sender_pid(port), signal.SIGKILL)
    gate.set()
    statuses = settled(client, tenant, 200, timeout=180)
    assert {d["status"] for d in statuses} == {"sent"}
    assert {e["event_id"] for e in ad_platforms.accepted_for(shop.meta_key).values()} == set(event_ids)
    assert ad_platforms.duplicates_for(shop.meta_key) == 0
    # The kill cut the batch short: each of its events arrived twice, the second time only after the lease.
    copies = ad_platforms.received_for(shop.meta_key)
    assert sorted(copies.values()) == [2] * len(event_ids)
    waited = [ad_platforms.arrivals[key][1] - ad_platforms.arrivals[key][0] for key in copies]
    assert min(waited) >= lease_seconds() - 1


def test_no_token_appears_in_any_answer_or_log_line(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Secretive")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    queue_conversions(tenant.tenant_id, [shop.meta["id"], shop.google["id"]], 3)
    settled(client, tenant, 6)
    tokens = [ad_platforms.meta_tokens[shop.meta["pixel_id"]]]
    tokens += [r for r, customer in ad_platforms.google_refresh.items() if customer == shop.google["customer_id"]]
    tokens += [a for a, customer in ad_platforms.google_access.items() if customer == shop.google["customer_id"]]
    answers = [
        client.get("/api/v1/integrations", headers=tenant.headers).text,
        client.get(f"/api/v1/integrations/{shop.meta['id']}", headers=tenant.headers).text,
        client.get("/api/v1/conversions", headers=tenant.headers).text,
    ]
    logs = [p.read_text(errors="replace") for p in (Path(os.environ["TRAILMARK_DATA_DIR"]) / "logs").glob("*.log")]
    assert any('"event_id"' in line or "conversion sent" in line for log in logs for line in log.splitlines())
    for token in tokens:
        assert all(token not in text for text in answers + logs), "a token leaked"


@pytest.mark.slow
def test_purchases_recorded_while_redis_is_down_are_delivered_once_it_is_back(
    make_tenant: Callable[..., TenantHandle],
    ad_platforms: FakeAdPlatforms,
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    """The API, a worker and beat run on a Redis of their own, which goes down while the shop reports its
    sales: the conversions wait in PostgreSQL's outbox, and once Redis is back each reaches Meta once. (The
    session's own pipeline, on another Redis, sweeps every tenant's outbox too and may record some during the
    outage; what must hold either way is checked: accepted during it, each delivered once after it.)"""
    redis_url, redis_down, redis_up = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=redis_url)
    worker = start_worker(TRAILMARK_REDIS_URL=redis_url)
    beat = start_beat(TRAILMARK_REDIS_URL=redis_url)
    try:
        with httpx.Client(base_url=api.base_url, timeout=30) as shop_server:
            tenant = make_tenant("Outage")
            shop = connect_meta_and_google(shop_server, tenant.headers, ad_platforms)
            redis_down()
            orders = [f"order-outage-{n}" for n in range(10)]
            for n, order in enumerate(orders):
                answer = shop_server.post(
                    "/api/v1/purchases",
                    json={"external_id": order, "amount": 1000 + n, "currency": "USD", "email": f"b{n}@example.com"},
                    headers=tenant.headers,
                )
                assert answer.status_code == 201, answer.text  # accepted during the outage
            redis_up()
            statuses = settled(shop_server, tenant, 20, timeout=180)
        by_platform = Counter((d["platform"], d["status"]) for d in statuses)
        assert by_platform == {("meta", "sent"): 10, ("google_ads", "skipped"): 10}  # Google needs a click id
        at_meta = ad_platforms.accepted_for(shop.meta_key)
        assert sorted(e["custom_data"]["order_id"] for e in at_meta.values()) == sorted(orders)
        assert all(e["action_source"] == "system_generated" for e in at_meta.values())  # no browser visit
    finally:
        stop(beat)
        stop(worker)
        api.stop()


def test_a_test_event_shows_at_the_platform_without_counting_as_a_conversion(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Testevents")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms)
    without_code = client.post(f"/api/v1/integrations/{shop.meta['id']}/test", headers=tenant.headers)
    assert without_code.status_code == 422 and "test_event_code" in without_code.text
    client.patch(
        f"/api/v1/integrations/{shop.meta['id']}", json={"test_event_code": "TEST4242"}, headers=tenant.headers
    )
    to_meta = client.post(f"/api/v1/integrations/{shop.meta['id']}/test", headers=tenant.headers)
    assert to_meta.status_code == 200 and to_meta.json()["delivered"] is True, to_meta.text
    to_google = client.post(f"/api/v1/integrations/{shop.google['id']}/test", headers=tenant.headers)
    assert to_google.json()["delivered"] is True, to_google.text
    seen = [e for e in ad_platforms.test_events if e["_destination"] in (shop.meta_key, shop.google_key)]
    assert sorted(e["_destination"] for e in seen) == sorted([shop.meta_key, shop.google_key])
    assert next(e for e in seen if e["_destination"] == shop.meta_key)["_code"] == "TEST4242"
    assert ad_platforms.accepted_for(shop.meta_key) == {} and ad_platforms.accepted_for(shop.google_key) == {}


def test_a_revoked_google_refresh_token_pauses_the_integration(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Revoked")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    for refresh, customer in list(ad_platforms.google_refresh.items()):
        if customer == shop.google["customer_id"]:
            del ad_platforms.google_refresh[refresh]  # the account owner removed Trailmark's access
    queue_conversions(tenant.tenant_id, [shop.google["id"]], 3)

    def paused() -> dict[str, Any] | None:
        found = client.get(f"/api/v1/integrations/{shop.google['id']}", headers=tenant.headers).json()
        return found if found["status"] == "paused" else None

    integration = wait_until(paused, 60, "the Google integration to pause")
    assert "Google refused the refresh token" in integration["paused_reason"]
    assert {d["status"] for d in deliveries(client, tenant)} == {"queued"}


def test_a_membership_registration_reaches_google_as_complete_registration(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """The browser that landed from a Google ad registers on the membership site: Google gets its gclid."""
    from tenants.isolation import tenant_session
    from tenants.memberships import service as memberships
    from tenants.memberships.pending import save_pending
    from tenants.security.tokens import get_signer

    tenant = make_tenant("Members")
    site = make_site(tenant, [ORIGIN])
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms)
    browser = Browser(client, site.site_key)
    browser.view("/join?gclid=Cj0-member-gclid")
    wait_stored(tenant.tenant_id, 1)
    with tenant_session(tenant.tenant_id) as session:
        club = memberships.create_membership_site(session, name="Club", registration="open")
        club_id = club.id
    pending = save_pending(
        tenant.tenant_id, club_id, email="member@example.com", first_name="Mem", next_path=None, lifetime_seconds=600
    )
    token = get_signer().sign(memberships.REGISTRATION_PURPOSE, tenant.tenant_id, pending.id)
    memberships.complete_registration(
        tenant.tenant_id,
        club_id,
        token=token,
        password="a long enough passphrase",
        presented_session=None,
        visitor_tokens=(browser.token,),
    )
    statuses = settled(client, tenant, 2)
    assert {(d["platform"], d["status"]) for d in statuses} == {("meta", "sent"), ("google_ads", "sent")}
    (click,) = ad_platforms.accepted_for(shop.google_key).values()
    assert click["gclid"] == "Cj0-member-gclid" and click["conversionAction"].endswith("/333")
    (event,) = ad_platforms.accepted_for(shop.meta_key).values()
    assert event["event_name"] == "CompleteRegistration"


def test_a_lead_reaches_tiktok_with_its_ttclid_and_ttp(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Tiktoker")
    site = make_site(tenant, [ORIGIN])
    ad_platforms.tiktok_tokens["C9TIKTOKPIXEL01"] = "tiktok-token-for-tests"
    created = client.post(
        "/api/v1/integrations",
        json={"platform": "tiktok", "pixel_code": "C9TIKTOKPIXEL01", "access_token": "tiktok-token-for-tests"},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    form = make_form(client, site.site_id, tenant.headers)
    viewer = Browser(client, site.site_key, cookies={"_ttp": "2Xttp-cookie-value"})
    viewer.view("/?ttclid=E.C.P.tiktok-click")
    wait_stored(tenant.tenant_id, 1)
    viewer.submit(form["form_key"], {"email": "tik@example.com"})
    assert [d["status"] for d in settled(client, tenant, 1)] == ["sent"]
    (event,) = ad_platforms.accepted_for("tiktok:C9TIKTOKPIXEL01").values()
    assert event["event"] == "SubmitForm"
    assert (event["user"]["ttclid"], event["user"]["ttp"]) == ("E.C.P.tiktok-click", "2Xttp-cookie-value")
    assert len(event["user"]["email"]) == 64 and event["user"]["user_agent"]


def test_a_lead_and_a_purchase_reach_linkedin_with_the_li_fat_id_and_the_hashed_email(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """LinkedIn's Conversions API: each conversion under the rule its kind maps to, with the landing's li_fat_id
    and the email's SHA-256, the value as a decimal string; once each. It has no test mode: asking for a test
    event is refused with the reason."""
    from tenants.conversions import hashing

    tenant = make_tenant("Linkedin")
    site = make_site(tenant, [ORIGIN])
    ad_platforms.linkedin_tokens["AQV-linkedin-token-for-tests"] = "acme"
    created = client.post(
        "/api/v1/integrations",
        json={
            "platform": "linkedin",
            "access_token": "AQV-linkedin-token-for-tests",
            "conversion_actions": {"lead": "1101", "purchase": "1102"},
            "events": {"complete_registration": False},
        },
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "LinkedIn" and created.json()["token_set"] is True
    form = make_form(client, site.site_id, tenant.headers)
    visitor = Browser(client, site.site_key)
    visitor.view("/?li_fat_id=2f4c1e5a-9b1d-4e2c-8f3a-linkedin-click")
    wait_stored(tenant.tenant_id, 1)
    visitor.submit(form["form_key"], {"email": " Lin@Example.com "})
    bought = client.post(
        "/api/v1/purchases",
        json={"external_id": "order-li-1", "amount": 4950, "currency": "USD", "visitor_token": visitor.token},
        headers=tenant.headers,
    )
    assert bought.status_code == 201, bought.text
    assert [d["status"] for d in settled(client, tenant, 2)] == ["sent", "sent"]
    at_linkedin = {e["conversion"]: e for e in ad_platforms.accepted_for("linkedin:acme").values()}
    assert set(at_linkedin) == {"urn:lla:llaPartnerConversion:1101", "urn:lla:llaPartnerConversion:1102"}
    expected_ids = [
        {"idType": "SHA256_EMAIL", "idValue": hashing.sha256("lin@example.com")},
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "2f4c1e5a-9b1d-4e2c-8f3a-linkedin-click"},
    ]
    assert all(e["user"]["userIds"] == expected_ids for e in at_linkedin.values())
    purchase = at_linkedin["urn:lla:llaPartnerConversion:1102"]
    assert purchase["conversionValue"] == {"currencyCode": "USD", "amount": "49.50"}
    assert ad_platforms.duplicates_for("linkedin:acme") == 0
    test = client.post(f"/api/v1/integrations/{created.json()['id']}/test", headers=tenant.headers)
    assert test.status_code == 422 and "no test mode" in test.text


def test_a_conversion_past_metas_window_is_dead_lettered_and_the_rest_delivered(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Meta refuses a whole request for one event older than 7 days: it never goes out, and says why."""
    from datetime import UTC, datetime, timedelta

    tenant = make_tenant("Latecomer")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    (late,) = queue_conversions(
        tenant.tenant_id, [shop.meta["id"]], 1, occurred_at=datetime.now(UTC) - timedelta(days=8)
    )
    fresh = queue_conversions(tenant.tenant_id, [shop.meta["id"]], 4)
    statuses = {d["event_id"]: d for d in settled(client, tenant, 5)}
    assert statuses[late]["status"] == "failed"
    assert statuses[late]["reason"] == "dead letter: older than meta's 7-day window"
    assert all(statuses[e]["status"] == "sent" for e in fresh)
    assert len(ad_platforms.accepted_for(shop.meta_key)) == 4


def test_a_google_conversion_long_after_its_click_is_dead_lettered_by_the_click_time(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Google's 90 days run from the click: a conversion on a gclid first seen 100 days ago would be refused
    (EXPIRED_EVENT) whether it happened today or 20 days ago, so neither goes out, and each says why; one
    clicked 10 days ago is delivered."""
    from datetime import UTC, datetime, timedelta

    tenant = make_tenant("Longclick")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    now = datetime.now(UTC)
    old_click = (now - timedelta(days=100)).isoformat()
    (late,) = queue_conversions(tenant.tenant_id, [shop.google["id"]], 1, clicked_at=old_click)
    (older,) = queue_conversions(
        tenant.tenant_id, [shop.google["id"]], 1, clicked_at=old_click, occurred_at=now - timedelta(days=20)
    )
    (recent,) = queue_conversions(
        tenant.tenant_id, [shop.google["id"]], 1, clicked_at=(now - timedelta(days=10)).isoformat()
    )
    statuses = {d["event_id"]: d for d in settled(client, tenant, 3)}
    for expired in (late, older):
        assert statuses[expired]["status"] == "failed"
        assert statuses[expired]["reason"] == (
            f"dead letter: its click is older than google_ads's 90-day window (click id first seen {old_click})"
        )
        assert ad_platforms.received[expired] == 0
    assert statuses[recent]["status"] == "sent"
    assert set(ad_platforms.accepted_for(shop.google_key)) == {recent}


def test_a_request_refused_as_a_whole_is_not_split_and_the_destination_backs_off(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """A refusal about the request (Meta: no such pixel; Google: a malformed request) is not one event's
    fault: it is not split into a request per half (which would fail every event for good), the events stay
    queued with the reason, and the destination backs off to try again."""
    tenant = make_tenant("Wholerefusal")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    no_pixel = {"error": {"message": "Unsupported post request. Object with ID does not exist", "code": 100,
                          "error_subcode": 33, "type": "GraphMethodException"}}  # fmt: skip
    ad_platforms.script(shop.meta_key, Scripted(400, no_pixel, times=1000))
    malformed = {
        "error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Request contains an invalid argument."}
    }
    ad_platforms.script(shop.google_key, Scripted(400, malformed, times=1000))
    queue_conversions(tenant.tenant_id, [shop.meta["id"], shop.google["id"]], 8)

    def both_backed_off() -> list[dict[str, Any]] | None:
        found = [_integration(client, tenant, shop.meta["id"]), _integration(client, tenant, shop.google["id"])]
        return found if all(i["backoff_until"] for i in found) else None

    meta, google = wait_until(both_backed_off, 60, "both destinations to back off")
    assert "Meta refused the request" in meta["last_failure"] and "code 100" in meta["last_failure"]
    assert "Google refused the request" in google["last_failure"] and "INVALID_ARGUMENT" in google["last_failure"]
    # Every request carried the whole batch: none was split.
    assert set(ad_platforms.request_sizes[shop.meta_key]) == set(ad_platforms.request_sizes[shop.google_key]) == {8}
    found = deliveries(client, tenant)
    assert len(found) == 16 and {d["status"] for d in found} == {"queued"}
    assert all(d["attempts"] >= 1 and "refused the request" in d["reason"] for d in found)


def test_a_403_permission_refusal_pauses_the_integration_instead_of_splitting_the_batch(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """A 403 is about the credentials, not one event: pause and keep every event queued, dead-letter none."""
    tenant = make_tenant("Forbidden")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    refusal = {"error": {"code": 200, "message": "Permissions error", "type": "OAuthException"}}
    ad_platforms.script(shop.meta_key, Scripted(403, refusal, times=1000))
    queue_conversions(tenant.tenant_id, [shop.meta["id"]], 8)

    def paused() -> dict[str, Any] | None:
        found = client.get(f"/api/v1/integrations/{shop.meta['id']}", headers=tenant.headers).json()
        return found if found["status"] == "paused" else None

    integration = wait_until(paused, 60, "the integration to pause on a 403")
    assert "Meta refused the access token" in integration["paused_reason"]
    assert {d["status"] for d in deliveries(client, tenant)} == {"queued"}  # none dead-lettered by a split


def _person(tenant_id: Any, email: str) -> Any:
    from tenants.contacts.service import ContactChanges, upsert_by_email
    from tenants.isolation import tenant_session

    with tenant_session(tenant_id) as session:
        contact, _ = upsert_by_email(session, ContactChanges(email=email))
        return contact.id


def _erase(client: Any, tenant: TenantHandle, contact_id: Any) -> str:
    answer = client.post(f"/api/v1/contacts/{contact_id}/erase", headers=tenant.headers)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _erase_report(
    client: Any, tenant: TenantHandle, erasure_id: str, ready: Callable[[dict[str, Any]], Any], what: str
) -> dict[str, Any]:
    """The erase report once the erase is done and ``ready`` holds of its ``conversions``."""

    def reported() -> dict[str, Any] | None:
        body = client.get(f"/api/v1/erasures/{erasure_id}", headers=tenant.headers).json()
        return body["report"] if body["status"] == "done" and ready(body["report"]["conversions"]) else None

    return dict(wait_until(reported, 90, what, interval=0.3))


def _retraction_rows(tenant_id: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    from tenants.isolation import tenant_session

    with tenant_session(tenant_id) as session:
        rows = session.execute(text("SELECT status, attempts, order_id FROM conversion_retractions")).all()
    return [tuple(row) for row in rows]


def test_an_erased_persons_google_conversion_is_retracted_once_through_an_outage(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Google answers the first retraction 503: the erase is done at once all the same, the retraction is
    retried with backoff, applied once, and the report then lists it as retracted."""
    tenant = make_tenant("Retractor")
    contact_id = _person(tenant.tenant_id, "gone@retractor.example")
    google = send_to_google(tenant.tenant_id, ad_platforms, contact_id)
    outage = {"error": {"code": 503, "status": "UNAVAILABLE", "message": "The service is currently unavailable."}}
    ad_platforms.script(google.adjustments_key, Scripted(503, outage))

    erasure_id = _erase(client, tenant, contact_id)
    report = _erase_report(client, tenant, erasure_id, lambda c: c["retracted"], "the retraction to be applied")

    [entry] = report["conversions"]["retracted"]
    assert (entry["platform"], entry["conversion"], entry["status"]) == ("google_ads", "lead", "retracted")
    assert report["conversions"]["not_retracted"] == [] and report["conversions"]["not_retractable"] == []
    assert ad_platforms.requests[google.adjustments_key] == 2  # the 503, then the one applied
    assert ad_platforms.adjustments_received[google.order_id] == 1
    assert ad_platforms.retractions[google.order_id]["adjustmentType"] == "RETRACTION"
    assert _retraction_rows(tenant.tenant_id) == [("retracted", 2, None)]


def test_a_retraction_waits_while_google_refuses_the_token_and_goes_once_the_tenant_reconnects(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms, api_server: Any
) -> None:
    """Google refuses the integration's token: the integration pauses, the erase report (API and dashboard)
    says the retraction is not done and why; once the tenant reconnects, it goes."""

    tenant = make_tenant("Revokedretract")
    contact_id = _person(tenant.tenant_id, "gone@revoked.example")
    google = send_to_google(tenant.tenant_id, ad_platforms, contact_id)
    del ad_platforms.google_refresh[google.refresh_token]  # the account's access was revoked at Google
    for token, customer in list(ad_platforms.google_access.items()):
        if customer == google.customer:
            del ad_platforms.google_access[token]

    erasure_id = _erase(client, tenant, contact_id)
    report = _erase_report(
        client, tenant, erasure_id, lambda c: "paused" in str(c["not_retracted"]), "the pause to be reported"
    )
    [waiting] = report["conversions"]["not_retracted"]
    assert waiting["status"] == "pending" and waiting["platform"] == "google_ads"
    assert "Google refused the refresh token" in waiting["why"] and "reconnects" in waiting["why"]
    assert report["conversions"]["retracted"] == []
    assert google.order_id not in ad_platforms.retractions
    integration = client.get(f"/api/v1/integrations/{google.integration_id}", headers=tenant.headers).json()
    assert integration["status"] == "paused"
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page = owner.get(f"/app/privacy/erasures/{erasure_id}")
    assert page.status_code == 200 and "the integration is paused" in page.text

    reconnected = f"1//test-reconnected-{google.customer}"
    ad_platforms.google_refresh[reconnected] = google.customer
    answer = client.patch(
        f"/api/v1/integrations/{google.integration_id}", json={"refresh_token": reconnected}, headers=tenant.headers
    )
    assert answer.status_code == 200, answer.text
    report = _erase_report(client, tenant, erasure_id, lambda c: c["retracted"], "the retraction after reconnecting")
    assert report["conversions"]["not_retracted"] == []
    assert ad_platforms.adjustments_received[google.order_id] == 1
    assert "Retracted at" in owner.get(f"/app/privacy/erasures/{erasure_id}").text


def test_a_conversion_younger_than_a_day_is_retracted_once_google_takes_it_and_the_report_says_when(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Google adjusts a conversion only once it is 24 hours old (TOO_RECENT_CONVERSION): erasing someone who
    converted an hour ago schedules the retraction for then, rather than failing it. Should the tenant delete
    the integration meanwhile, the report says the retraction will never be made."""
    from datetime import datetime, timedelta

    tenant = make_tenant("Freshretract")
    contact_id = _person(tenant.tenant_id, "gone@fresh.example")
    google = send_to_google(tenant.tenant_id, ad_platforms, contact_id, hours_ago=1)
    erasure_id = _erase(client, tenant, contact_id)
    report = _erase_report(client, tenant, erasure_id, lambda c: c["not_retracted"], "the erase to be done")
    [waiting] = report["conversions"]["not_retracted"]
    assert waiting["status"] == "pending" and "24 hours old" in waiting["why"]
    next_attempt = datetime.fromisoformat(waiting["why"].rsplit("next attempt at ", 1)[1])
    assert next_attempt >= datetime.fromisoformat(waiting["occurred_at"]) + timedelta(hours=24)
    time.sleep(3)  # a flush or two later, nothing was sent early
    assert ad_platforms.requests[google.adjustments_key] == 0
    assert _retraction_rows(tenant.tenant_id) == [("queued", 0, google.order_id)]

    deleted = client.delete(f"/api/v1/integrations/{google.integration_id}", headers=tenant.headers)
    assert deleted.status_code == 204
    report = client.get(f"/api/v1/erasures/{erasure_id}", headers=tenant.headers).json()["report"]
    [abandoned] = report["conversions"]["not_retracted"]
    assert abandoned["status"] == "failed" and "integration was deleted" in abandoned["why"]
    assert _retraction_rows(tenant.tenant_id) == []


def test_a_retraction_names_the_action_the_conversion_was_uploaded_under_after_the_tenant_remaps_it(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """Google finds a conversion by its action: after the lead went to action 111 the tenant maps leads to 555;
    erasing the person retracts it under 111, where Google has it, and the report says it was retracted."""
    tenant = make_tenant("Remapped")
    contact_id = _person(tenant.tenant_id, "gone@remapped.example")
    google = send_to_google(tenant.tenant_id, ad_platforms, contact_id)
    assert ad_platforms.accepted_for(google.key)[google.order_id]["conversionAction"].endswith("/111")
    remapped = client.patch(
        f"/api/v1/integrations/{google.integration_id}",
        json={"conversion_actions": {"lead": "555"}},
        headers=tenant.headers,
    )
    assert remapped.status_code == 200 and remapped.json()["conversion_actions"] == {"lead": "555"}, remapped.text

    erasure_id = _erase(client, tenant, contact_id)
    report = _erase_report(client, tenant, erasure_id, lambda c: c["retracted"], "the retraction to be applied")
    [entry] = report["conversions"]["retracted"]
    assert entry["status"] == "retracted" and report["conversions"]["not_retracted"] == []
    assert ad_platforms.retractions[google.order_id]["conversionAction"].endswith("/111")


def test_a_person_erased_while_their_conversion_is_in_flight_is_reported_as_received_not_cancelled(
    client: Any, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    """The erase comes while a sender holds the person's lead (claimed and leased, its answer not recorded yet):
    Meta may have it, so the report lists it as received (Meta cannot withdraw it), never as cancelled."""
    from sqlalchemy import text

    from tenants.isolation import tenant_session

    tenant = make_tenant("Inflight")
    shop = connect_meta_and_google(client, tenant.headers, ad_platforms, **WEBINAR)
    contact_id = _person(tenant.tenant_id, "gone@inflight.example")
    with tenant_session(tenant.tenant_id) as session:  # no flush may take it: the sender below is the only one
        session.execute(
            text("UPDATE integrations SET backoff_until = now() + interval '1 hour' WHERE id = :i"),
            {"i": shop.meta["id"]},
        )
    queue_conversions(tenant.tenant_id, [shop.meta["id"]], 1, contact_id=contact_id)
    with tenant_session(tenant.tenant_id) as session:  # as a sender's claim leaves it while the request is out
        session.execute(
            text(
                "UPDATE conversion_deliveries SET attempt_id = gen_random_uuid(),"
                " lease_expires_at = now() + interval '2 minutes'"
            )
        )
    erasure_id = _erase(client, tenant, contact_id)
    report = _erase_report(client, tenant, erasure_id, lambda c: True, "the erase to be done")
    assert report["conversions"]["cancelled"] == 0
    [entry] = report["conversions"]["not_retractable"]
    assert (entry["platform"], entry["conversion"]) == ("meta", "custom: webinar_signup")
