"""The tracker in a real browser: Debian's headless Chromium driven by Playwright
opens a "tenant site" with the snippet, served on its own origin (``localhost``, while the API is on
``127.0.0.1``, so the two never share cookies), and the visits travel through the real API, Redis
stream, Celery ingest worker and PostgreSQL before the test reads them back through the REST API."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route

from tests.browser import DESKTOP_CHROME, TenantWebServer, is_collect, tenant_web_server
from tests.conftest import LiveServer, SiteHandle, TenantHandle, make_site, wait_stored

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("pipeline")]

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS_DEFAULT = None
"""Keep Chromium's own user agent (``HeadlessChrome/…``)."""

LANDING_QUERY = "?utm_source=newsletter&utm_medium=email&utm_campaign=launch&fbclid=AbC123xyz&gclid=G-1&ref=partner42"
FBC_FORMAT = re.compile(r"^fb\.1\.\d{13}\.AbC123xyz$")
EXTERNAL_REFERRER = "https://news.example/today"
WAIT_MS = 30_000

# The tenant's pages. /app is a single-page app: its button changes the route with pushState,
# and its server answers every /app/… path with the same page (so a reload of a route works).
PAGES = {
    "/": ("Home", '<a id="to-pricing" href="/pricing">Pricing</a>'),
    "/pricing": ("Pricing", '<a id="to-app" href="/app">Open the app</a>'),
    "/app": ("App", "<button id=\"next\" onclick=\"history.pushState({}, '', '/app/step-2')\">Next</button>"),
}


@dataclass
class TenantSite:
    """A fresh tenant, its registered site, and the web server that carries the site's snippet."""

    api: LiveServer
    tenant: TenantHandle
    site: SiteHandle
    pages: TenantWebServer

    def url(self, path: str) -> str:
        return self.pages.url(path)

    def get(self, path: str, **params: Any) -> Any:
        """A tenant API read, as the tenant's own code would make it."""
        response = httpx.get(f"{self.api.base_url}{path}", params=params, headers=self.tenant.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def visitors(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/visitors", limit=500)["items"]

    def visitor(self, visitor_id: str) -> dict[str, Any]:
        return self.get(f"/api/v1/visitors/{visitor_id}")

    def wait_visits(self, expected: int) -> None:
        wait_stored(self.tenant.tenant_id, expected, timeout=60)


@pytest.fixture
def tenant_site(api_server: LiveServer, make_tenant: Callable[..., TenantHandle]) -> Iterator[TenantSite]:
    """Only the site's own origin is allowed; its pages carry the snippet the API hands out."""
    with tenant_web_server(PAGES) as pages:
        tenant = make_tenant("Lantern")
        site = make_site(tenant, [pages.origin])
        tenant_site = TenantSite(api_server, tenant, site, pages)
        pages.head = tenant_site.get(f"/api/v1/sites/{site.site_id}")["snippet"]
        yield tenant_site


@contextmanager
def browser_context(browser: Browser, user_agent: str | None = DESKTOP_CHROME) -> Iterator[BrowserContext]:
    """A fresh profile: no cookies, no localStorage (``None`` keeps Chromium's own user agent)."""
    context = browser.new_context(user_agent=user_agent)
    try:
        yield context
    finally:
        context.close()


# The tracker holds its token and its queue (mirrored in localStorage) is empty: every hit of the
# page got its 202. Each step waits for this so that what the test reads (cookies, the token, the
# stored visits) is settled, as it is for a person who reads a page before clicking on.
_SENT = """() => typeof trailmark == 'function' && !!trailmark('token')
    && JSON.parse(localStorage.getItem('tm_q') || '[]').length === 0"""


def wait_sent(page: Page) -> None:
    page.wait_for_function(_SENT, timeout=WAIT_MS)


def visit(page: Page, selector: str, url: str) -> None:
    """Click through to ``url`` (a link, or an SPA button) and wait until its pageview is sent."""
    page.click(selector)
    page.wait_for_url(url)
    wait_sent(page)


def cookie(context: BrowserContext, url: str, name: str) -> str | None:
    return next((c["value"] for c in context.cookies(url) if c["name"] == name), None)


def test_a_journey_is_one_visitor_that_keeps_its_first_touch(browser: Browser, tenant_site: TenantSite) -> None:
    site = tenant_site
    landing = site.url("/" + LANDING_QUERY)
    with browser_context(browser) as context:
        page = context.new_page()
        page.goto(landing, referer=EXTERNAL_REFERRER)  # arrives from a newsletter's link
        wait_sent(page)
        fbc = cookie(context, landing, "_fbc")
        assert fbc is not None
        assert FBC_FORMAT.match(fbc), fbc  # Meta's format: milliseconds, fbclid verbatim
        visit(page, "#to-pricing", site.url("/pricing"))  # an ordinary link, no UTMs
        visit(page, "#to-app", site.url("/app"))
        visit(page, "#next", site.url("/app/step-2"))  # an SPA route: pushState, no page load
        token = page.evaluate("trailmark('token')")
        visitor_cookie = cookie(context, landing, "tm_vid")
        page.reload()
        wait_sent(page)
        assert cookie(context, landing, "tm_vid") == visitor_cookie == token  # the cookie outlived the reload
        assert page.evaluate("trailmark('token')") == token

    # One pageview per page load and per pushState: landing, pricing, app, app/step-2, the reload.
    site.wait_visits(5)
    [visitor] = site.visitors()
    detail = site.visitor(visitor["id"])
    visits = detail["visits"]
    assert [v["path"] for v in visits] == ["/", "/pricing", "/app", "/app/step-2", "/app/step-2"]
    assert {v["visitor_id"] for v in visits} == {visitor["id"]}
    assert all(v["type"] == "pageview" and not v["is_bot"] for v in visits)
    assert visits[0]["url"] == landing
    assert visits[0]["utm"] == {"source": "newsletter", "medium": "email", "campaign": "launch"}
    assert visits[0]["click_ids"] == {"fbclid": "AbC123xyz", "gclid": "G-1"}
    assert visits[0]["partner_code"] == "partner42"
    assert all(v["utm"] == {} and v["click_ids"] == {} and v["partner_code"] is None for v in visits[1:])
    assert visits[3]["referrer"] == site.url("/app")  # an SPA route's referrer is the route before it
    assert all(v["ad_cookies"] == {"_fbc": fbc} for v in visits)  # the cookie the browser holds

    assert detail["visit_count"] == 5
    assert detail["is_bot"] is False
    first = detail["first_touch"]
    assert first["landing_page"] == landing
    assert first["referrer"] == EXTERNAL_REFERRER
    assert first["utm"] == {"source": "newsletter", "medium": "email", "campaign": "launch"}
    assert {name: click["value"] for name, click in first["click_ids"].items()} == {
        "fbclid": "AbC123xyz",
        "gclid": "G-1",
    }
    assert first["partner_code"] == "partner42"
    assert first["ad_cookies"] == {"_fbc": fbc}
    # Later pages carried no campaign data (same-site referrers), so the last touch is the landing too.
    assert detail["last_touch"]["landing_page"] == landing

    # Another browser profile (no cookies) is another visitor, with its own (empty) attribution.
    with browser_context(browser) as other:
        page = other.new_page()
        page.goto(site.url("/"))
        wait_sent(page)
        assert page.evaluate("trailmark('token')") != token
    site.wait_visits(6)
    newcomer = [v for v in site.visitors() if v["id"] != visitor["id"]]
    assert len(newcomer) == 1
    assert newcomer[0]["visit_count"] == 1
    assert newcomer[0]["first_touch"]["landing_page"] == site.url("/")
    assert newcomer[0]["first_touch"]["utm"] == {}
    assert newcomer[0]["first_touch"]["partner_code"] is None
    assert site.visitor(visitor["id"])["first_touch"] == first  # the first visitor is untouched


def test_the_visitor_cookie_is_first_party_and_long_lived(browser: Browser, tenant_site: TenantSite) -> None:
    with browser_context(browser) as context:
        page = context.new_page()
        page.goto(tenant_site.url("/"))
        wait_sent(page)
        page_time = page.evaluate("Date.now() / 1000")
        [visitor_cookie] = [c for c in context.cookies() if c["name"] == "tm_vid"]
    assert visitor_cookie["domain"] == "localhost"  # the tenant's site, not the API's host
    assert visitor_cookie["sameSite"] == "Lax"
    assert visitor_cookie["secure"] is False  # plain http here; the tracker adds Secure on https
    # As long as the tenant keeps an anonymous visitor: 13 months by default (395 days, under Chrome's 400).
    assert 394 * 86400 < visitor_cookie["expires"] - page_time <= 395 * 86400


@pytest.mark.parametrize(
    ("user_agent", "reason"),
    [(HEADLESS_DEFAULT, "headless browser"), (GOOGLEBOT, "crawler: ")],
    ids=["headless-chrome", "googlebot"],
)
def test_a_bot_is_stored_flagged_and_kept_out_of_attribution(
    browser: Browser, tenant_site: TenantSite, user_agent: str | None, reason: str
) -> None:
    site = tenant_site
    landing = site.url("/" + LANDING_QUERY)
    with browser_context(browser, user_agent) as context:
        page = context.new_page()
        page.goto(landing)
        wait_sent(page)

    site.wait_visits(1)
    [visitor] = site.visitors()
    assert visitor["is_bot"] is True
    assert visitor["first_touch"] is None  # its UTMs and click ids credit nobody
    assert visitor["last_touch"] is None
    [stored] = site.visitor(visitor["id"])["visits"]
    assert stored["url"] == landing  # kept for the record, flagged
    assert stored["is_bot"] is True
    assert stored["bot_reason"].startswith(reason), stored["bot_reason"]
    assert site.get("/api/v1/visitors", is_bot="false")["items"] == []


def test_an_unknown_origin_is_refused(browser: Browser, tenant_site: TenantSite) -> None:
    site = tenant_site
    # Someone copies the snippet onto a site the tenant never registered.
    with tenant_web_server(PAGES) as stranger, browser_context(browser) as context:
        stranger.head = site.pages.head
        page = context.new_page()
        with page.expect_response(lambda r: is_collect(r.url), timeout=WAIT_MS) as refused:
            page.goto(stranger.url("/" + LANDING_QUERY))
        assert refused.value.status == 403
        assert stranger.origin in refused.value.json()["detail"]
        assert page.evaluate("trailmark('token')") is None  # no visitor was handed to it
        # The refusal is readable by the tracker, so it drops the hits instead of retrying forever.
        page.wait_for_function("!JSON.parse(localStorage.getItem('tm_q') || '[]').length", timeout=WAIT_MS)

    # A visit from the real site afterwards, as a barrier instead of a sleep: once it is stored, the
    # pipeline has drained past anything the stranger's page could have had accepted before it.
    with browser_context(browser) as context:
        page = context.new_page()
        page.goto(site.url("/"))
        wait_sent(page)
    site.wait_visits(1)
    [visitor] = site.visitors()
    [stored] = site.visitor(visitor["id"])["visits"]
    assert stored["url"] == site.url("/")


def test_the_tracker_retries_a_failed_send(browser: Browser, tenant_site: TenantSite) -> None:
    failures: list[str] = []

    def flaky_network(route: Route) -> None:
        if len(failures) < 2:
            failures.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    with browser_context(browser) as context:
        page = context.new_page()
        page.route(is_collect, flaky_network)
        page.goto(tenant_site.url("/"))
        # Backoff of about 1 s, then 2 s: sent on the third try without a new page load.
        page.wait_for_function(_SENT, timeout=10_000)
    assert len(failures) == 2
    tenant_site.wait_visits(1)


def test_fbc_follows_the_latest_facebook_ad_click(browser: Browser, tenant_site: TenantSite) -> None:
    """Meta credits the click in ``_fbc``: a returning visitor from a second ad must send the second
    click, created when it happened, not the first one forever."""
    site = tenant_site
    first_landing, second_landing = site.url("/?fbclid=FIRST"), site.url("/?fbclid=SECOND")
    with browser_context(browser) as context:
        page = context.new_page()
        page.goto(first_landing)
        wait_sent(page)
        first = cookie(context, first_landing, "_fbc")
        assert first is not None
        assert re.fullmatch(r"fb\.1\.\d{13}\.FIRST", first), first
        page.goto(site.url("/pricing"))  # a landing without fbclid keeps the current click
        wait_sent(page)
        assert cookie(context, first_landing, "_fbc") == first
        page.wait_for_function(f"Date.now() > {first.split('.')[2]}")  # the next click is a later one
        page.goto(second_landing)  # days later, from another ad
        wait_sent(page)
        second = cookie(context, second_landing, "_fbc")
        assert second is not None
        assert re.fullmatch(r"fb\.1\.\d{13}\.SECOND", second), second
        assert int(second.split(".")[2]) > int(first.split(".")[2])
        page.reload()  # the same click again keeps its creation time
        wait_sent(page)
        assert cookie(context, second_landing, "_fbc") == second

    site.wait_visits(4)
    [visitor] = site.visitors()
    detail = site.visitor(visitor["id"])
    stored = [(v["click_ids"].get("fbclid"), v["ad_cookies"].get("_fbc")) for v in detail["visits"]]
    assert stored == [("FIRST", first), (None, first), ("SECOND", second), ("SECOND", second)]
    assert detail["first_touch"]["ad_cookies"] == {"_fbc": first}
    assert detail["last_touch"]["ad_cookies"] == {"_fbc": second}
