"""Conversions to ad platforms: a tenant connects Meta, Google Ads and TikTok, and its tokens stay secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.conftest import TenantHandle, make_site

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
