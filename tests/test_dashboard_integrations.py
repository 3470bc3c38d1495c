"""Dashboard → Ad platforms: an owner connects Meta with a token and Google Ads through Google's consent screen
(OAuth 2 with PKCE, against a local authorization server), sends a test event, and sees a paused integration
say why; an editor only looks; no page ever shows a token."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tenants.models import UserRole
from tests.conftest import LiveServer, TenantHandle
from tests.support.ad_platforms import FakeAdPlatforms
from tests.support.dashboard import add_staff, check_screen, csrf_of, login_browser, login_http

META_TOKEN = "EAAdashboard-secret-token-0042"


def _post(staff: httpx.Client, path: str, data: dict[str, Any], *, page: str) -> httpx.Response:
    return staff.post(path, data={"csrf": csrf_of(staff.get(page).text), **data})


def test_an_owner_connects_meta_and_google_ads_and_sends_a_test_event(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], ad_platforms: FakeAdPlatforms
) -> None:
    tenant = make_tenant("Dashads")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    assert owner.get("/app/integrations").status_code == 200

    ad_platforms.meta_tokens["5551234567"] = META_TOKEN
    meta = _post(
        owner,
        "/app/integrations",
        {"platform": "meta", "pixel_id": "5551234567", "access_token": META_TOKEN, "event_lead": "on"},
        page="/app/integrations",
    )
    assert meta.status_code == 303, meta.text
    meta_page = meta.headers["location"]
    saved = _post(
        owner, meta_page, {"name": "Shop pixel", "test_event_code": "TEST123", "event_lead": "on"}, page=meta_page
    )
    assert saved.status_code == 303, saved.text
    tested = _post(owner, f"{meta_page}/test", {}, page=meta_page)
    assert tested.status_code == 200 and "Test event delivered" in tested.text, tested.text
    assert any(e["_code"] == "TEST123" for e in ad_platforms.test_events if e["_destination"] == "meta:5551234567")

    refused = _post(
        owner, "/app/integrations", {"platform": "google_ads", "customer_id": "12"}, page="/app/integrations"
    )
    assert refused.status_code == 422 and 'id="error-customer_id"' in refused.text

    google = _post(
        owner,
        "/app/integrations",
        {"platform": "google_ads", "customer_id": "555-000-4242", "action_purchase": "909", "event_purchase": "on"},
        page="/app/integrations",
    )
    assert google.status_code == 303, google.text
    google_page = google.headers["location"]
    assert "not connected" in owner.get(google_page).text  # paused until Google's consent

    ad_platforms.grant_customer = "5550004242"
    to_google = _post(owner, f"{google_page}/google/connect", {}, page=google_page)
    assert to_google.status_code == 303
    consent = urlsplit(to_google.headers["location"])
    query = parse_qs(consent.query)
    assert query["code_challenge_method"] == ["S256"] and "code_verifier" not in query
    back = httpx.get(to_google.headers["location"], follow_redirects=False)  # the person clicks Allow
    assert back.status_code == 302, back.headers
    callback = urlsplit(back.headers["location"])
    connected = owner.get(f"{callback.path}?{callback.query}")
    assert connected.status_code == 303 and connected.headers["location"] == google_page
    shown = owner.get(google_page).text
    assert "Active: conversions are sent" in shown
    replayed = owner.get(f"{callback.path}?{callback.query}")  # the state is good once
    assert replayed.status_code == 422
    tested = _post(owner, f"{google_page}/test", {}, page=google_page)
    assert "Test event delivered" in tested.text, tested.text

    add_staff(tenant.tenant_id, "ed@dashads.example", UserRole.EDITOR)
    editor = login_http(api_server.base_url, tenant.slug, "ed@dashads.example")
    assert "Connect an ad platform" not in editor.get("/app/integrations").text
    assert editor.post(f"{meta_page}/test", data={"csrf": csrf_of(owner.get(meta_page).text)}).status_code == 403
    granted = [r for r, c in ad_platforms.google_refresh.items() if c == "5550004242"]
    for page in (owner.get("/app/integrations").text, owner.get(meta_page).text, shown, editor.get(meta_page).text):
        assert META_TOKEN not in page and all(token not in page for token in granted)
        assert not re.search(r"EAA[a-z]+-secret", page)


@pytest.mark.browser
def test_the_ad_platform_screens_are_usable_in_a_browser(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any, ad_platforms: FakeAdPlatforms
) -> None:
    """Connect Meta through the form in Chromium, then see its page: both screens pass the axe-core check."""
    tenant = make_tenant("Browserads")
    ad_platforms.meta_tokens["5559876543"] = META_TOKEN
    context = browser.new_context()
    page = context.new_page()
    try:
        login_browser(page, api_server.base_url, tenant.slug, tenant.owner_email)
        page.get_by_role("link", name="Ad platforms", exact=True).click()
        check_screen(page, "ad-platforms")
        page.get_by_label("Pixel (dataset) id").fill("5559876543")
        page.get_by_label("Access token (Meta, TikTok)").fill(META_TOKEN)
        page.get_by_role("button", name="Connect", exact=True).click()
        page.wait_for_url(re.compile(r"/app/integrations/[0-9a-f-]{36}$"))
        assert "Active: conversions are sent" in page.locator("#integration-status").inner_text()
        assert page.get_by_label("New access token (blank keeps the stored one)").input_value() == ""
        check_screen(page, "ad-platform")
        assert META_TOKEN not in page.content()
    finally:
        context.close()


def test_a_site_asks_for_ad_consent_from_the_dashboard(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Optinsite")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    created = _post(
        owner,
        "/app/sites",
        {"name": "EU shop", "allowed_origins": "https://eu.example", "honor_dnt": "on", "ads_consent": "opt_in"},
        page="/app/sites",
    )
    assert created.status_code == 303, created.text
    sites = httpx.get(f"{api_server.base_url}/api/v1/sites", headers=tenant.headers).json()
    assert [s["ads_consent"] for s in sites] == ["opt_in"]
    assert 'value="opt_in" selected' in owner.get(created.headers["location"]).text
