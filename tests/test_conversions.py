"""Conversions to ad platforms: a tenant connects Meta, Google Ads and TikTok, and its tokens stay secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

from sqlalchemy import text

from tenants.conversions import consent
from tenants.isolation import tenant_session
from tenants.models import Site
from tests.conftest import TenantHandle, make_site
from tests.support.conversions import ORIGIN, Browser

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
