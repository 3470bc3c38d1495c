"""An opt-in site's consent banner in Chromium: nothing kept before consent, tracked after, forgotten on withdrawal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.browser import DESKTOP_CHROME, is_collect, tenant_web_server
from tests.conftest import LiveServer, TenantHandle, make_site, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("pipeline")]

PAGES = {"/offer": ("Offer", "<p>Our offer</p>")}


def _visits(tenant: TenantHandle) -> list[tuple[str, Any]]:
    with tenant_session(tenant.tenant_id) as session:
        return [tuple(row) for row in session.execute(text("SELECT path, utm_source FROM visits"))]


def _totals(api: httpx.Client) -> tuple[int, int, int, int]:
    """The overview's visitors, visits, page views and cookieless visitors today."""
    today = datetime.now(UTC).date().isoformat()
    totals = api.get("/api/v1/reports/overview", params={"start": today, "end": today, "compare": "false"}).json()
    return (
        totals["totals"]["visitors"],
        totals["totals"]["visits"],
        totals["totals"]["pageviews"],
        totals["totals"]["cookieless_visitors"],
    )


def test_an_opt_in_banner_sets_the_cookie_only_after_consent_and_withdrawal_forgets_the_browser(
    browser: Any, api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Banner")
    api = httpx.Client(base_url=api_server.base_url, headers=tenant.headers, timeout=10)
    with tenant_web_server(PAGES) as pages:
        site = make_site(tenant, [pages.origin], consent_mode="opt_in")
        pages.head = api.get(f"/api/v1/sites/{site.site_id}").json()["snippet"]
        context = browser.new_context(user_agent=DESKTOP_CHROME)
        visitor_cookie = lambda: [c for c in context.cookies() if c["name"] == "tm_vid" and c["value"]]  # noqa: E731
        try:
            page = context.new_page()
            with page.expect_response(lambda r: is_collect(r.url)) as answered:
                page.goto(pages.url("/offer?utm_source=news"))
            assert answered.value.status == 202
            assert not visitor_cookie() and not page.evaluate("trailmark('token')")
            assert _visits(tenant) == []
            wait_until(lambda: _totals(api) == (1, 1, 1, 1), 60, "the overview counts the visit before consent")

            page.evaluate("trailmark('consent', {analytics: true})")
            page.wait_for_function("() => !!trailmark('token')", timeout=30_000)
            stored = wait_until(lambda: _visits(tenant), 60, "the consented page view stored", interval=0.2)
            assert stored[0][0] == "/offer" and stored[0][1] == "news", stored
            assert visitor_cookie()
            # The page view sent on consent is the same one, counted already: still one visitor, visit, page view.
            assert _totals(api) == (1, 1, 1, 1)

            page.evaluate("trailmark('consent', {analytics: false})")
            page.wait_for_function("() => !trailmark('token')", timeout=30_000)
            assert not visitor_cookie()
            assert _visits(tenant) == []
        finally:
            context.close()
