"""From first click to the partner's commission, in Chromium: Monica arrives through Pat's link on her phone and
signs up there, is identified on her laptop by the link in an email, buys on the laptop, and Pat sees the referral
and the pending commission in the portal (each screen passes the axe check); Quinn, another partner, sees none."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.browser import DESKTOP_CHROME, TenantWebServer, tenant_web_server
from tests.conftest import LiveServer, TenantHandle, make_site, wait_until
from tests.support.commissions import COURSE, earning_program, wait_commissions
from tests.support.dashboard import check_screen
from tests.support.partners import PASSWORD, give_password

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("pipeline")]

PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile"
    " Safari/537.36"
)
WAIT_MS = 30_000
MIN_FILL_SECONDS = 1
PAGES = {
    "/": ("Home", "<h1>Welcome</h1>"),
    "/signup": ("Sign up", "<h1>Sign up</h1>{form}"),
    "/offer": ("Offer", "<h1>Our course</h1>"),
    "/thanks": ("Thanks", "<h1>Thank you</h1>"),
}
_SENT = """() => typeof trailmark == 'function' && !!trailmark('token')
    && JSON.parse(localStorage.getItem('tm_q') || '[]').length === 0"""
_FORM = "form[data-trailmark-form]"
_FILLED_LONG_ENOUGH = f"""ms => Date.now() - Number(document.querySelector('{_FORM} [name=tm_started]').value) > ms"""


@contextmanager
def device(browser: Browser, user_agent: str) -> Iterator[BrowserContext]:
    """One device: its own cookies and storage."""
    context = browser.new_context(user_agent=user_agent)
    try:
        yield context
    finally:
        context.close()


def goto(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(_SENT, timeout=WAIT_MS)


def visitor_token(context: BrowserContext, pages: TenantWebServer) -> str:
    [value] = [c["value"] for c in context.cookies(pages.origin + "/") if c["name"] == "tm_vid"]
    return unquote(value)


def api(server: LiveServer, tenant: TenantHandle, path: str, body: dict[str, Any] | None = None) -> Any:
    if body is None:
        answer = httpx.get(f"{server.base_url}{path}", headers=tenant.headers, timeout=10)
    else:
        answer = httpx.post(f"{server.base_url}{path}", json=body, headers=tenant.headers, timeout=10)
    assert answer.status_code in {200, 201}, answer.text
    return answer.json()


def log_in(page: Page, base_url: str, slug: str, email: str) -> None:
    page.goto(f"{base_url}/p/{slug}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(rf"/p/{slug}$"))


def test_monica_buys_on_her_laptop_and_the_partner_whose_link_she_followed_on_her_phone_sees_the_commission(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Browser
) -> None:
    program = earning_program(make_tenant("Commissionstory"), "pat", "quinn", tiers=1)
    tenant, slug = program.tenant, program.tenant.slug
    for partner in program.partners.values():
        give_password(tenant, partner.id)
    with tenant_web_server(PAGES) as pages:
        site = make_site(tenant, [pages.origin])
        form = api(api_server, tenant, "/api/v1/forms", {
            "site_id": str(site.site_id), "name": "Newsletter", "fields": [{"name": "email", "maps_to": "email"}],
            "min_fill_seconds": MIN_FILL_SECONDS, "success_redirect": pages.origin + "/thanks",
        })  # fmt: skip
        pages.head = api(api_server, tenant, f"/api/v1/sites/{site.site_id}")["snippet"]
        pages.slots["form"] = form["embed_html"]

        with device(browser, PHONE) as phone:  # Pat's link, then the newsletter signup
            page = phone.new_page()
            goto(page, pages.origin + "/?ref=pat-link&sid=instagram")
            goto(page, pages.origin + "/signup")
            page.fill(f"{_FORM} input[name=email]", "monica@example.com")
            page.wait_for_function(_FILLED_LONG_ENOUGH, arg=MIN_FILL_SECONDS * 1000 + 250, timeout=WAIT_MS)
            page.click(f"{_FORM} button[type=submit]")
            page.wait_for_url(pages.origin + "/thanks")

        def monica() -> str | None:
            with tenant_session(tenant.tenant_id) as session:
                row = session.execute(text("SELECT id FROM contacts WHERE email = 'monica@example.com'")).first()
                return str(row[0]) if row else None

        contact_id = wait_until(monica, 60, "Monica's contact")
        link = api(
            api_server, tenant, "/api/v1/links", {"contact_id": contact_id, "target_url": pages.origin + "/offer"}
        )
        with tenant_session(tenant.tenant_id) as session:  # sent a minute ago: a click right away is a scanner's
            session.execute(text("UPDATE email_links SET created_at = now() - interval '1 minute'"))

        with device(browser, DESKTOP_CHROME) as laptop:  # the email's link, days later, on her laptop
            page = laptop.new_page()
            page.goto(link["url"])
            page.wait_for_url(pages.origin + "/offer")
            page.wait_for_function(_SENT, timeout=WAIT_MS)
            token = visitor_token(laptop, pages)

    def identified() -> bool:
        return bool(api(api_server, tenant, f"/api/v1/resolve?visitor_token={token}").get("level") == "identified")

    wait_until(identified, 60, "the laptop identified as Monica")
    # The shop's server reports the sale with the laptop's token: no email, no code.
    purchase = api(api_server, tenant, "/api/v1/purchases", {
        "external_id": "order-monica", "amount": 9900, "currency": "EUR", "visitor_token": token,
        "items": [{"product": COURSE, "quantity": 1, "unit_amount": 9900}],
    })  # fmt: skip
    assert purchase["contact_id"] == contact_id
    (commission,) = wait_commissions(tenant, 1)
    assert commission["partner_id"] == program.partners["pat"].id and commission["amount"] == 2970

    page = browser.new_page()
    log_in(page, api_server.base_url, slug, program.partners["pat"].email)
    figures = page.locator(".figures dd").all_inner_texts()
    assert figures[:3] == ["1", "1", "1"]  # a click, a lead, a customer
    assert "€29.70" in figures[3] or "29.70" in figures[3]  # pending
    check_screen(page, "partner-home-earnings")
    page.get_by_role("link", name="Referrals").click()
    assert "m•••@example.com\tfirst" in page.locator("table").inner_text()  # masked, as the program shares it
    page.get_by_role("link", name="Commissions", exact=True).click()
    row = page.locator("tbody tr").first.inner_text()
    assert "29.70" in row and "pending" in row and commission["payable_at"].strftime("%Y-%m-%d") in row
    assert "live click" in row  # why Pat got the credit
    check_screen(page, "partner-commissions")
    page.get_by_role("link", name="Payouts").click()
    assert "No payouts yet" in page.locator("main").inner_text()
    check_screen(page, "partner-payouts")
    page.close()

    other = browser.new_page()
    log_in(other, api_server.base_url, slug, program.partners["quinn"].email)
    other.get_by_role("link", name="Commissions", exact=True).click()
    assert "No commissions yet" in other.locator("main").inner_text()
    other.get_by_role("link", name="Referrals").click()
    assert "Nobody yet" in other.locator("main").inner_text()
    other.close()
