"""The tracker's side of conversions, in Chromium: the consent banner's answer and a conversion whose event id
the page gets at once (for its own pixel), recorded with that id and skipped because the visitor said no."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser import DESKTOP_CHROME, tenant_web_server
from tests.conftest import LiveServer, TenantHandle, make_site, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("pipeline")]

PAGES = {"/webinar": ("Webinar", '<button id="signup">Sign up</button>')}
_SENT = """() => typeof trailmark == 'function' && !!trailmark('token')
    && JSON.parse(localStorage.getItem('tm_q') || '[]').length === 0"""


def test_a_refused_banner_and_a_conversion_the_page_knows_the_event_id_of(
    browser: Any, api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Banner")
    api = httpx.Client(base_url=api_server.base_url, headers=tenant.headers, timeout=10)
    with tenant_web_server(PAGES) as pages:
        site = make_site(tenant, [pages.origin])
        pages.head = api.get(f"/api/v1/sites/{site.site_id}").json()["snippet"]
        created = api.post(
            "/api/v1/integrations",
            json={"platform": "meta", "pixel_id": "777000111", "access_token": "EAAbanner-token",
                  "events": {"custom": ["webinar_signup"]}},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        context = browser.new_context(user_agent=DESKTOP_CHROME)
        try:
            page = context.new_page()
            page.goto(pages.url("/webinar?fbclid=IwAR-banner"))
            page.wait_for_function(_SENT, timeout=30_000)
            page.evaluate("trailmark('consent', {ads: false})")
            event_id = page.evaluate("trailmark('conversion', 'webinar_signup', {seats: 1})")
            page.wait_for_function(_SENT, timeout=30_000)
        finally:
            context.close()
    assert isinstance(event_id, str) and len(event_id) == 32

    def recorded() -> dict[str, Any] | None:
        items = api.get("/api/v1/conversions").json()["items"]
        return items[0] if items else None

    conversion = wait_until(recorded, 60, "the conversion to be recorded", interval=0.2)
    assert conversion["event_id"] == event_id and conversion["event_name"] == "webinar_signup"
    assert [(d["status"], d["reason"]) for d in conversion["deliveries"]] == [
        ("skipped", "the visitor refused ad consent")
    ]
    consent = api.get(f"/api/v1/visitors/{conversion['visitor_id']}/consent").json()
    assert (consent["ads"], consent["source"]) == (False, "tracker")
