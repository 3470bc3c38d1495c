"""Conversions to ad platforms: a tenant connects Meta, Google Ads and TikTok, and its tokens stay secret."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text

from tenants.conversions import consent, hashing, payloads
from tenants.conversions.service import event_id_of, record
from tenants.isolation import tenant_session
from tenants.models import Contact, Conversion, ConversionKind, Integration, Site
from tests.conftest import (
    REPO,
    TenantHandle,
    child_env,
    log_file,
    make_site,
    start_api_server,
    stop,
    wait_stored,
    wait_until,
)
from tests.support.conversions import BROWSER, ORIGIN, Browser, connect_meta_and_google, make_form

META_TOKEN = "EAAGm0PX4ZCpsBAsecret-meta-token-0001"
GOOGLE_REFRESH = "1//0gsecret-google-refresh-token-0001"
TIKTOK_TOKEN = "tiktok-secret-token-0001"


def test_a_tenant_connects_each_platform_and_its_tokens_never_come_back(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Tokens are write-only: stored encrypted, answered only as token_set, in no answer and not in the row."""
    tenant = make_tenant("Adsco")
    site = make_site(tenant, ["https://adsco.example"])
    meta = client.post(
        "/api/v1/integrations",
        json={"platform": "meta", "pixel_id": "123456789012", "access_token": META_TOKEN, "site_id": str(site.site_id)},
        headers=tenant.headers,
    )
    assert meta.status_code == 201, meta.text
    assert meta.json()["status"] == "active" and meta.json()["token_set"] is True
    assert meta.json()["site_id"] == str(site.site_id)
    google = client.post(
        "/api/v1/integrations",
        json={
            "platform": "google_ads",
            "customer_id": "123-456-7890",
            "login_customer_id": "9876543210",
            "conversion_actions": {"lead": "111", "purchase": "222", "complete_registration": "333"},
            "refresh_token": GOOGLE_REFRESH,
        },
        headers=tenant.headers,
    )
    assert google.status_code == 201, google.text
    assert google.json()["customer_id"] == "1234567890"
    assert google.json()["conversion_actions"] == {"lead": "111", "purchase": "222", "complete_registration": "333"}
    tiktok = client.post(
        "/api/v1/integrations",
        json={"platform": "tiktok", "pixel_code": "C4ABCDEF12345", "access_token": TIKTOK_TOKEN},
        headers=tenant.headers,
    )
    assert tiktok.status_code == 201, tiktok.text

    listed = client.get("/api/v1/integrations", headers=tenant.headers)
    assert [i["platform"] for i in listed.json()] == ["meta", "google_ads", "tiktok"]
    answers = [meta.text, google.text, tiktok.text, listed.text]
    answers.append(client.get(f"/api/v1/integrations/{meta.json()['id']}", headers=tenant.headers).text)
    for secret in (META_TOKEN, GOOGLE_REFRESH, TIKTOK_TOKEN):
        assert all(secret not in answer for answer in answers)
    with tenant_session(tenant.tenant_id) as session:
        stored = session.execute(text("SELECT secret FROM integrations")).scalars().all()
    assert all(META_TOKEN.encode() not in bytes(row) for row in stored)

    renamed = client.patch(
        f"/api/v1/integrations/{meta.json()['id']}",
        json={"name": "Shop pixel", "events": {"lead": False, "custom": ["webinar_signup"]}},
        headers=tenant.headers,
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Shop pixel" and renamed.json()["token_set"] is True
    assert renamed.json()["events"] == {
        "lead": False,
        "purchase": True,
        "complete_registration": True,
        "custom": ["webinar_signup"],
    }
    gone = client.delete(f"/api/v1/integrations/{tiktok.json()['id']}", headers=tenant.headers)
    assert gone.status_code == 204
    assert client.get(f"/api/v1/integrations/{tiktok.json()['id']}", headers=tenant.headers).status_code == 404


def test_a_patch_of_events_changes_only_the_kinds_it_sends(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Turning one conversion off must not turn back on the ones the tenant turned off before."""
    tenant = make_tenant("Patchy")
    meta = client.post(
        "/api/v1/integrations",
        json={
            "platform": "meta",
            "pixel_id": "123456789012",
            "access_token": META_TOKEN,
            "events": {"purchase": False},
        },
        headers=tenant.headers,
    )
    assert meta.status_code == 201, meta.text
    url = f"/api/v1/integrations/{meta.json()['id']}"
    lead_off = client.patch(url, json={"events": {"lead": False}}, headers=tenant.headers)
    assert lead_off.status_code == 200, lead_off.text
    assert lead_off.json()["events"] == {
        "lead": False,
        "purchase": False,
        "complete_registration": True,
        "custom": [],
    }
    named = client.patch(url, json={"events": {"custom": ["webinar_signup"]}}, headers=tenant.headers)
    assert named.status_code == 200, named.text
    purchase_on = client.patch(url, json={"events": {"purchase": True}}, headers=tenant.headers)
    assert purchase_on.status_code == 200, purchase_on.text
    assert client.get(url, headers=tenant.headers).json()["events"] == {
        "lead": False,
        "purchase": True,
        "complete_registration": True,
        "custom": ["webinar_signup"],
    }

    # Google needs an action per kind it receives: a kind turned back on by a PATCH would be refused.
    google = client.post(
        "/api/v1/integrations",
        json={
            "platform": "google_ads",
            "customer_id": "1234567890",
            "conversion_actions": {"purchase": "222"},
            "refresh_token": GOOGLE_REFRESH,
            "events": {"lead": False, "complete_registration": False},
        },
        headers=tenant.headers,
    )
    assert google.status_code == 201, google.text
    custom = client.patch(
        f"/api/v1/integrations/{google.json()['id']}",
        json={
            "events": {"custom": ["webinar_signup"]},
            "conversion_actions": {"purchase": "222", "custom": [{"event": "webinar_signup", "action": "444"}]},
        },
        headers=tenant.headers,
    )
    assert custom.status_code == 200, custom.text
    assert custom.json()["events"] == {
        "lead": False,
        "purchase": True,
        "complete_registration": False,
        "custom": ["webinar_signup"],
    }


def test_an_integration_that_cannot_work_is_refused_with_each_reason(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Refusals")
    no_pixel = client.post("/api/v1/integrations", json={"platform": "meta"}, headers=tenant.headers)
    assert no_pixel.status_code == 422
    assert {e["field"] for e in no_pixel.json()["errors"]} == {"pixel_id"}
    mixed = client.post(
        "/api/v1/integrations",
        json={"platform": "meta", "pixel_id": "123456", "refresh_token": GOOGLE_REFRESH},
        headers=tenant.headers,
    )
    assert mixed.status_code == 422 and "refresh_token" in mixed.text
    no_action = client.post(
        "/api/v1/integrations",
        json={"platform": "google_ads", "customer_id": "1234567890", "conversion_actions": {"purchase": "1"}},
        headers=tenant.headers,
    )
    assert no_action.status_code == 422
    assert {e["field"] for e in no_action.json()["errors"]} == {
        "conversion_actions.lead",
        "conversion_actions.complete_registration",
    }
    unknown_site = client.post(
        "/api/v1/integrations",
        json={"platform": "meta", "pixel_id": "123456", "site_id": "0190f5a4-0000-7000-8000-000000000000"},
        headers=tenant.headers,
    )
    assert unknown_site.status_code == 422 and "site_id" in unknown_site.text
    unconnected = client.post(
        "/api/v1/integrations",
        json={
            "platform": "google_ads",
            "customer_id": "1234567890",
            "conversion_actions": {"purchase": "1"},
            "events": {"lead": False, "complete_registration": False},
        },
        headers=tenant.headers,
    )
    assert unconnected.status_code == 201, unconnected.text
    assert unconnected.json()["status"] == "paused" and "not connected" in unconnected.json()["paused_reason"]
    connected = client.patch(
        f"/api/v1/integrations/{unconnected.json()['id']}",
        json={"refresh_token": GOOGLE_REFRESH},
        headers=tenant.headers,
    )
    assert connected.json()["status"] == "active" and connected.json()["paused_reason"] is None
    reader = client.post("/api/v1/integrations", json={"platform": "meta", "pixel_id": "1"}, headers={})
    assert reader.status_code == 401


def _visitor(tenant: TenantHandle, site_id: Any) -> Any:
    """A browser stored the way ingest stores it, with the token it holds."""
    import time
    import uuid

    from tenants.tracking.hits import Envelope, Hit
    from tenants.tracking.ingest import store_envelopes
    from tenants.tracking.visitors import visitor_of_browser

    now = int(time.time() * 1000)
    browser = visitor_of_browser(tenant.tenant_id, first_hit=(uuid.uuid4(), now))
    hit = Hit(hit_id=uuid.uuid4(), ts=now, url=f"{ORIGIN}/", path="/")
    with tenant_session(tenant.tenant_id) as session:
        store_envelopes(session, [Envelope(tenant.tenant_id, site_id, browser.visitor_id, now, [hit])])
    return browser


def test_a_visitors_ad_consent_comes_from_the_banner_or_the_api_and_keeps_when_it_changed(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Consenting")
    created = client.post(
        "/api/v1/sites",
        json={"name": "EU shop", "allowed_origins": [ORIGIN], "ads_consent": "opt_in"},
        headers=tenant.headers,
    )
    assert created.status_code == 201 and created.json()["ads_consent"] == "opt_in"
    site = created.json()
    browser = _visitor(tenant, UUID(site["id"]))
    path = f"/api/v1/visitors/{browser.visitor_id}/consent"
    assert client.get(path, headers=tenant.headers).json()["ads"] is None

    banner = {"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"}
    granted = client.post(
        f"/t/{site['site_key']}/consent", content=json.dumps({"token": browser.token, "ads": True}), headers=banner
    )
    assert granted.status_code == 200, granted.text
    first = client.get(path, headers=tenant.headers).json()
    assert first["ads"] is True and first["source"] == "tracker" and first["changed_at"]
    again = client.post(
        f"/t/{site['site_key']}/consent", content=json.dumps({"token": browser.token, "ads": True}), headers=banner
    )
    assert again.json()["changed_at"] == granted.json()["changed_at"]  # the same answer is not a change

    refused = client.put(path, json={"ads": False}, headers=tenant.headers)
    assert refused.status_code == 200, refused.text
    assert refused.json()["ads"] is False and refused.json()["source"] == "api"
    assert refused.json()["changed_at"] > first["changed_at"]

    no_token = client.post(f"/t/{site['site_key']}/consent", content=json.dumps({"ads": True}), headers=banner)
    assert no_token.status_code == 422
    elsewhere = client.post(
        f"/t/{site['site_key']}/consent",
        content=json.dumps({"token": browser.token, "ads": True}),
        headers={**banner, "Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    unknown = client.put(f"/api/v1/visitors/{UUID(int=7)}/consent", json={"ads": True}, headers=tenant.headers)
    assert unknown.status_code == 404


def test_a_form_sent_with_gpc_marks_the_browser_as_a_no(client: Any, make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Private")
    site = make_site(tenant, [ORIGIN])
    form = client.post(
        "/api/v1/forms",
        json={
            "site_id": str(site.site_id),
            "name": "Newsletter",
            "fields": [{"name": "email", "maps_to": "email", "type": "email"}],
            "min_fill_seconds": 1,
        },
        headers=tenant.headers,
    ).json()
    Browser(client, site.site_key, headers={"Sec-GPC": "1"}).submit(form["form_key"], {"email": "gpc@example.com"})
    with tenant_session(tenant.tenant_id) as session:
        (visitor_id,) = session.execute(text("SELECT visitor_id FROM form_submissions")).one()
        stored = consent.consent_of(session, visitor_id)
        site_row = session.get(Site, (tenant.tenant_id, site.site_id))
        assert stored is not None and stored.privacy_signal == "gpc"
        assert consent.refusal(site_row, stored) == "the browser sent Global Privacy Control, which the site honours"
        assert site_row is not None
        site_row.honor_dnt = False
        assert consent.refusal(site_row, stored) is None  # a site that does not honour GPC sends
        site_row.ads_consent = "opt_in"
        assert consent.refusal(site_row, stored) == "the site needs ad consent and the visitor has not given it"
        session.rollback()


def _conversions(client: Any, tenant: TenantHandle, count: int) -> list[dict[str, Any]]:
    def recorded() -> list[dict[str, Any]] | None:
        items = client.get("/api/v1/conversions", headers=tenant.headers).json()["items"]
        return items if len(items) >= count else None

    return list(wait_until(recorded, 60, f"{count} conversion(s) recorded", interval=0.2))


def _landing_ms(tenant: TenantHandle, fbclid: str) -> int:
    with tenant_session(tenant.tenant_id) as session:
        at = session.execute(
            text("SELECT min(occurred_at) FROM visits WHERE click_ids->>'fbclid' = :f"), {"f": fbclid}
        ).scalar()
    return int(at.timestamp() * 1000)


def _integration(session: Any, tenant: TenantHandle, integration_id: str) -> Integration:
    found = session.get(Integration, (tenant.tenant_id, UUID(integration_id)))
    assert found is not None
    return found


def test_monicas_lead_and_purchase_are_recorded_with_the_click_ids_of_her_visits(
    client: Any, make_tenant: Callable[..., TenantHandle], pipeline: None
) -> None:
    """Meta gets the fbclid of her landing a day before (the visit she converted on has none), Google the gclid
    of the visit she converted on; each conversion once, with its event id."""
    tenant = make_tenant("Monicashop")
    site = make_site(tenant, [ORIGIN])
    shop = connect_meta_and_google(client, tenant.headers)
    meta, google = shop.meta, shop.google
    form = make_form(client, site.site_id, tenant.headers)
    monica = Browser(client, site.site_key, cookies={"_fbp": "fb.1.1764000000000.1098115397"})
    monica.view("/?utm_source=facebook&fbclid=IwAR2F4-Monica_Landing")
    monica.view("/pricing?gclid=Cj0KCQiA-monica-gclid")
    wait_stored(tenant.tenant_id, 2)
    monica.submit(form["form_key"], {"email": "monica@example.com", "first_name": "Monica"})
    bought = client.post(
        "/api/v1/purchases",
        json={"external_id": "order-1001", "amount": 4900, "currency": "USD", "visitor_token": monica.token},
        headers=tenant.headers,
    )
    assert bought.status_code == 201, bought.text

    purchase, lead = _conversions(client, tenant, 2)
    assert (lead["kind"], purchase["kind"]) == ("lead", "purchase")
    for conversion in (lead, purchase):
        assert conversion["touches"]["meta"]["source"] == "recent_visit", conversion["touches"]
        assert conversion["touches"]["meta"]["click_ids"] == {"fbclid": "IwAR2F4-Monica_Landing"}
        assert conversion["touches"]["meta"]["ad_cookies"] == {"_fbp": "fb.1.1764000000000.1098115397"}
        assert conversion["touches"]["google_ads"]["source"] == "converting_visit"
        assert conversion["touches"]["google_ads"]["click_ids"] == {"gclid": "Cj0KCQiA-monica-gclid"}
        assert {d["integration_id"]: d["status"] for d in conversion["deliveries"]} == {
            meta["id"]: "queued",
            google["id"]: "queued",
        }
    assert (purchase["value"], purchase["currency"], purchase["order_id"]) == (4900, "USD", "order-1001")
    assert lead["event_id"] != purchase["event_id"]

    landing_ms = _landing_ms(tenant, "IwAR2F4-Monica_Landing")
    with tenant_session(tenant.tenant_id) as session:
        stored = session.get(Conversion, (tenant.tenant_id, UUID(purchase["id"])))
        assert stored is not None and stored.contact_id is not None
        contact = session.get(Contact, (tenant.tenant_id, stored.contact_id))
        to_meta = payloads.build(stored, contact, _integration(session, tenant, meta["id"]), None)
        to_google = payloads.build(stored, contact, _integration(session, tenant, google["id"]), None)
    assert isinstance(to_meta, payloads.Built) and isinstance(to_google, payloads.Built)
    event = to_meta.payload
    assert event["event_name"] == "Purchase" and event["event_id"] == purchase["event_id"]
    assert (
        event["action_source"] == "website"
        and event["event_source_url"] == f"{ORIGIN}/pricing?gclid=Cj0KCQiA-monica-gclid"
    )
    assert event["user_data"]["fbc"] == f"fb.1.{landing_ms}.IwAR2F4-Monica_Landing"
    assert event["user_data"]["fbp"] == "fb.1.1764000000000.1098115397"
    assert event["user_data"]["em"] == [hashing.sha256("monica@example.com")]
    assert event["user_data"]["client_user_agent"] == BROWSER
    assert event["custom_data"] == {"value": 49.0, "currency": "USD", "order_id": "order-1001"}
    click = to_google.payload
    assert click["gclid"] == "Cj0KCQiA-monica-gclid" and "gbraid" not in click and "wbraid" not in click
    assert click["conversionAction"] == f"customers/{google['customer_id']}/conversionActions/222"
    assert click["orderId"] == purchase["event_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", click["conversionDateTime"])
    assert click["consent"] == {"adUserData": "UNSPECIFIED"}
    assert click["userIdentifiers"] == [{"hashedEmail": hashing.sha256("monica@example.com")}]

    # A redelivered hook records nothing more, and the event id is the same wherever it is computed.
    with tenant_session(tenant.tenant_id) as session:
        assert record(session, ConversionKind.PURCHASE, bought.json()["id"]) is None
        assert purchase["event_id"] == event_id_of(tenant.tenant_id, f"purchase:{bought.json()['id']}")
        assert session.execute(text("SELECT count(*) FROM conversion_deliveries")).scalar() == 4


def test_a_gpc_browsers_lead_is_recorded_but_skipped_with_its_reason(
    client: Any, make_tenant: Callable[..., TenantHandle], pipeline: None
) -> None:
    tenant = make_tenant("Gpcshop")
    site = make_site(tenant, [ORIGIN])
    connect_meta_and_google(client, tenant.headers)
    form = make_form(client, site.site_id, tenant.headers)
    private = Browser(client, site.site_key, headers={"Sec-GPC": "1"})
    private.view("/?fbclid=IwAR-private")  # collect stores nothing for it (204)
    private.submit(form["form_key"], {"email": "private@example.com"})
    (lead,) = _conversions(client, tenant, 1)
    assert [d["status"] for d in lead["deliveries"]] == ["skipped", "skipped"]
    assert {d["reason"] for d in lead["deliveries"]} == {
        "the browser sent Global Privacy Control, which the site honours"
    }


def test_the_converting_browsers_yes_is_not_cancelled_by_the_contacts_other_browsers(
    client: Any, make_tenant: Callable[..., TenantHandle], pipeline: None
) -> None:
    """On an opt-in site Ana said no on her phone and yes on her laptop: her purchase on the laptop is sent, her
    lead on the phone is not. The browser that converted decides."""
    tenant = make_tenant("Twobrowsers")
    created = client.post(
        "/api/v1/sites",
        json={"name": "EU shop", "allowed_origins": [ORIGIN], "ads_consent": "opt_in"},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    site = created.json()
    shop = connect_meta_and_google(client, tenant.headers)
    form = make_form(client, UUID(site["id"]), tenant.headers)
    phone, laptop = Browser(client, site["site_key"]), Browser(client, site["site_key"])
    phone.view("/?fbclid=IwAR-ana-phone")
    laptop.view("/pricing?gclid=Cj0-ana-laptop")
    wait_stored(tenant.tenant_id, 2)
    banner = {"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"}
    for browser, ads in ((phone, False), (laptop, True)):
        answer = client.post(
            f"/t/{site['site_key']}/consent", content=json.dumps({"token": browser.token, "ads": ads}), headers=banner
        )
        assert answer.status_code == 200, answer.text
    phone.submit(form["form_key"], {"email": "ana@example.com"})
    laptop.submit(form["form_key"], {"email": "ana@example.com"})  # the same contact: no second lead
    (lead,) = _conversions(client, tenant, 1)
    bought = client.post(
        "/api/v1/purchases",
        json={"external_id": "order-ana", "amount": 2500, "currency": "EUR", "visitor_token": laptop.token},
        headers=tenant.headers,
    )
    assert bought.status_code == 201, bought.text
    purchase, lead = _conversions(client, tenant, 2)
    assert (lead["kind"], purchase["kind"]) == ("lead", "purchase")
    assert lead["contact_id"] == purchase["contact_id"] is not None
    assert {d["status"] for d in lead["deliveries"]} == {"skipped"}
    assert {d["reason"] for d in lead["deliveries"]} == {"the visitor refused ad consent"}
    assert {d["integration_id"]: d["status"] for d in purchase["deliveries"]} == {
        shop.meta["id"]: "queued",
        shop.google["id"]: "queued",
    }


def test_a_purchase_reported_without_a_browser_follows_the_contacts_browsers_together(
    client: Any, make_tenant: Callable[..., TenantHandle], pipeline: None
) -> None:
    """On an opt-in site Ana said yes on her laptop; her phone, seen since, never answered. A purchase the shop's
    server reports with her email only (no browser) is sent: a browser that never answered does not cancel her
    yes. Once the phone says no, later than the laptop's yes, such a purchase is skipped."""
    tenant = make_tenant("Serverorders")
    created = client.post(
        "/api/v1/sites",
        json={"name": "EU shop", "allowed_origins": [ORIGIN], "ads_consent": "opt_in"},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    site = created.json()
    connect_meta_and_google(client, tenant.headers)
    form = make_form(client, UUID(site["id"]), tenant.headers)
    laptop, phone = Browser(client, site["site_key"]), Browser(client, site["site_key"])
    banner = {"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"}

    def answer(browser: Browser, ads: bool) -> None:
        said = client.post(
            f"/t/{site['site_key']}/consent", content=json.dumps({"token": browser.token, "ads": ads}), headers=banner
        )
        assert said.status_code == 200, said.text

    laptop.view("/pricing?fbclid=IwAR-ana-laptop")
    wait_stored(tenant.tenant_id, 1)
    answer(laptop, True)
    laptop.submit(form["form_key"], {"email": "ana@example.com"})
    (lead,) = _conversions(client, tenant, 1)
    phone.view("/?gclid=Cj0-ana-phone")
    wait_stored(tenant.tenant_id, 2)
    phone.submit(form["form_key"], {"email": "ana@example.com"})  # her phone is hers too, and seen last

    def bought(order: str) -> dict[str, Any]:
        answered = client.post(
            "/api/v1/purchases",
            json={"external_id": order, "amount": 2500, "currency": "EUR", "email": "ana@example.com"},
            headers=tenant.headers,
        )
        assert answered.status_code == 201, answered.text
        found = wait_until(
            lambda: next((c for c in _conversions(client, tenant, 1) if c["order_id"] == order), None),
            60,
            f"{order} recorded",
        )
        assert found["contact_id"] == lead["contact_id"] and found["visitor_id"] is None
        return dict(found)

    sent = bought("order-ana-1")
    assert "skipped" not in {d["status"] for d in sent["deliveries"]}, sent["deliveries"]
    answer(phone, False)
    refused = bought("order-ana-2")
    assert {(d["status"], d["reason"]) for d in refused["deliveries"]} == {
        ("skipped", "the visitor refused ad consent")
    }


def test_a_tracked_event_converts_only_where_an_integration_names_it(
    client: Any, make_tenant: Callable[..., TenantHandle], pipeline: None
) -> None:
    tenant = make_tenant("Webinars")
    site = make_site(tenant, [ORIGIN])
    connect_meta_and_google(client, tenant.headers, events={"lead": False, "custom": ["webinar_signup"]})
    visitor = Browser(client, site.site_key)
    visitor.view("/webinar?fbclid=IwAR-webinar")
    visitor.view("/webinar", type="event", event_name="webinar_signup")
    visitor.view("/webinar", type="event", event_name="video_played")
    wait_stored(tenant.tenant_id, 3)
    (signup,) = _conversions(client, tenant, 1)
    assert (signup["kind"], signup["event_name"]) == ("custom", "webinar_signup")
    assert [d["platform"] for d in signup["deliveries"]] == ["meta", "google_ads"]
    assert signup["touches"]["meta"]["click_ids"] == {"fbclid": "IwAR-webinar"}


@pytest.mark.parametrize(
    ("normalize", "raw", "normalized", "digest"),
    [
        (hashing.meta_email, "  John_Smith@Gmail.com ", "john_smith@gmail.com",
         "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"),
        (hashing.meta_phone, "+1 (650) 555-1212", "16505551212",
         "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
        (hashing.meta_name, "Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
        (hashing.meta_city, "St. Louis", "stlouis", "8ba24bdf99947996f3000259be455de791b06fcc0e802ce05031030df1ee8ea3"),
        (hashing.meta_zip, "94035-1234", "94035", "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"),
        (hashing.meta_country, "US", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
        (hashing.google_email, "Jane.Doe+news@Gmail.com ", "janedoe@gmail.com",
         "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"),
        (hashing.google_phone, "+1 800 555 0102", "+18005550102",
         "c5383c2eeada28210d27f011bc127d4f9562cf38ff0c9bba33dd45ae79b9fe7c"),
    ],
)  # fmt: skip
def test_user_data_is_normalised_and_hashed_as_each_platform_matches_it(
    normalize: Callable[[str], str | None], raw: str, normalized: str, digest: str
) -> None:
    """The platforms' own test vectors: a wrong hash matches nobody, silently."""
    assert normalize(raw) == normalized
    assert hashing.sha256(normalize(raw)) == digest


def test_meta_and_google_normalise_the_same_address_differently() -> None:
    assert hashing.meta_email("Jane.Doe+news@Gmail.com") == "jane.doe+news@gmail.com"
    assert hashing.google_email("Jane.Doe+news@Example.com") == "jane.doe+news@example.com"  # only Gmail's rule
    assert hashing.meta_phone("+1 800 555 0102") == "18005550102"
    assert hashing.sha256("") is None and hashing.meta_name("  ") is None  # blanks are dropped, not hashed
    already = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    assert hashing.sha256(already) == already
    assert payloads.meta_fbc({"ad_cookies": {"_fbc": "fb.1.1554763741205.AbCd.AQYBAAMA"}}) == (
        "fb.1.1554763741205.AbCd.AQYBAAMA"  # a five-segment cookie passes through unchanged
    )


def test_a_form_sent_right_after_landing_still_converts_on_the_landing_visit(
    client: Any, make_tenant: Callable[..., TenantHandle], pipeline: None
) -> None:
    """The landing's page view may still wait in the ingest stream when the lead is recorded: recording waits
    for it, so the lead gets the landing's fbclid from the visit it converted on."""
    tenant = make_tenant("Quickform")
    site = make_site(tenant, [ORIGIN])
    connect_meta_and_google(client, tenant.headers)
    form = make_form(client, site.site_id, tenant.headers)
    quick = Browser(client, site.site_key)
    quick.view("/?fbclid=IwAR-quick&gclid=Cj0-quick")
    quick.submit(form["form_key"], {"email": "quick@example.com"})  # no wait for ingest
    (lead,) = _conversions(client, tenant, 1)
    assert lead["touches"]["meta"]["source"] == "converting_visit"
    assert lead["touches"]["meta"]["click_ids"] == {"fbclid": "IwAR-quick"}
    assert lead["touches"]["google_ads"]["click_ids"] == {"gclid": "Cj0-quick"}


@pytest.mark.slow
def test_a_lead_recorded_while_its_landing_waits_in_the_ingest_stream_waits_for_it(
    make_tenant: Callable[..., TenantHandle],
    owner_url: str,
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    """The API and a worker without the ingest queue run on a Redis of their own, so the landing stays in the
    stream: the lead's recording waits until the test's own ingest stores it, then converts on that visit."""
    import psycopg
    import redis
    from celery import Celery

    from tenants.outbox.service import SWEEP_LOCK
    from tenants.tracking.buffer import IngestBuffer
    from tenants.tracking.ingest import drain
    from workers.app import configure

    redis_url = private_redis[0]
    api = start_api_server(TRAILMARK_REDIS_URL=redis_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--queues", "conversions,default", "--concurrency", "1"],
        cwd=REPO,
        env=child_env(TRAILMARK_REDIS_URL=redis_url),
        stdout=log_file("worker"),
        stderr=subprocess.STDOUT,
    )
    # The session's own beat must not publish this test's outbox rows to the session's Redis.
    with psycopg.connect(owner_url, autocommit=True) as lock:
        wait_until(lambda: lock.execute("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,)).fetchone() == (True,), 30,
                   "the running outbox sweep to finish")  # fmt: skip
        try:
            with httpx.Client(base_url=api.base_url, timeout=30) as http:
                tenant = make_tenant("Heldlanding")
                ready = Celery("held-landing", set_as_current=False)
                configure(ready, redis_url)
                ready.send_task("trailmark.system.ping", args=[str(tenant.tenant_id), "up"]).get(timeout=90)
                site = make_site(tenant, [ORIGIN])
                connect_meta_and_google(http, tenant.headers)
                form = make_form(http, site.site_id, tenant.headers)
                quick = Browser(http, site.site_key)
                quick.view("/?fbclid=IwAR-held-landing")
                quick.submit(form["form_key"], {"email": "held@example.com"})
                time.sleep(2)
                assert http.get("/api/v1/conversions", headers=tenant.headers).json()["items"] == []  # waiting
                drain(IngestBuffer(redis.Redis.from_url(redis_url), claim_idle_ms=30_000))
                (lead,) = _conversions(http, tenant, 1)
            assert lead["touches"]["meta"]["source"] == "converting_visit"
            assert lead["touches"]["meta"]["click_ids"] == {"fbclid": "IwAR-held-landing"}
        finally:
            stop(worker)
            api.stop()
