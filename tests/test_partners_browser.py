"""The partner portal in Chromium: a partner logs in, finds its referral and its sale in the report, builds a link
with a SubID, and every screen passes the axe check; another partner sees none of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tenants.contacts.service import ContactChanges, create_contact
from tenants.identity.service import link_visitor
from tenants.isolation import tenant_session
from tenants.models import Evidence, PurchaseSource, new_id
from tenants.partners.commissions import record_commissions
from tenants.purchases.service import Buyer, Order, record_purchase
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import store_envelopes
from tests.conftest import LiveServer, TenantHandle
from tests.support.dashboard import check_screen
from tests.support.partners import ORIGIN, PASSWORD, ProgramHandle, give_password, make_program


def _referred(program: ProgramHandle, code: str, email: str) -> None:
    """A browser that landed on ``?ref=code`` (stored by ingest) and then filled a form as ``email``."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    visitor_id = new_id()
    landing = Hit(hit_id=new_id(), ts=now, url=f"{ORIGIN}/?ref={code}", path="/", partner_code=code)
    with tenant_session(program.tenant.tenant_id) as session:
        store_envelopes(
            session,
            [
                Envelope(
                    tenant_id=program.tenant.tenant_id,
                    site_id=program.site.site_id,
                    visitor_id=visitor_id,
                    received_at=now,
                    hits=[landing],
                )
            ],
        )
        contact = create_contact(session, ContactChanges(email=email, first_name="Monica"))
        link_visitor(session, visitor_id=visitor_id, contact_id=contact.id, evidence=Evidence.FORM, new_contact=True)
        # She buys, and the purchase is credited as the purchase worker does it.
        order = Order(source=PurchaseSource.API, external_id=f"o-{new_id()}", amount=4200, currency="EUR",
                      buyer=Buyer(contact.id))  # fmt: skip
        record_commissions(session, record_purchase(session, order).purchase.id)


def _log_in(page: Any, base_url: str, slug: str, email: str) -> None:
    page.goto(f"{base_url}/p/{slug}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(rf"/p/{slug}$"))


def test_a_partner_finds_its_referral_and_builds_a_link_in_the_portal(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    program = make_program(make_tenant("Portal"), "pat", "quinn")
    _referred(program, "pat-link", "monica@example.com")
    for partner in program.partners.values():
        give_password(program.tenant, partner.id)
    slug, base_url = program.tenant.slug, api_server.base_url

    page = browser.new_page()
    page.goto(f"{base_url}/p/{slug}/login")
    check_screen(page, "partner-login")
    page.goto(f"{base_url}/p/{slug}/apply")
    check_screen(page, "partner-apply")
    _log_in(page, base_url, slug, program.partners["pat"].email)
    assert page.locator(".figures dd").all_inner_texts()[:2] == ["1", "1"]  # one click, one lead
    check_screen(page, "partner-home")

    page.get_by_role("link", name="Links and codes").click()
    link = page.get_by_label("Referral link for pat-link")
    page.get_by_label(re.compile("SubID")).fill("spring")
    assert link.input_value() == f"{ORIGIN}/?ref=pat-link&sid=spring"  # the builder follows the typing
    check_screen(page, "partner-links")

    page.get_by_role("link", name="Referrals").click()
    assert "M. m•••@example.com" in page.locator("table").inner_text()
    check_screen(page, "partner-referrals")
    page.get_by_role("link", name="Reports").click()
    assert page.locator("#per-sid tbody tr").first.inner_text().split()[:5] == ["(none)", "1", "1", "1", "1"]
    assert "42.00" in page.locator("#per-day").inner_text()
    check_screen(page, "partner-report")
    page.get_by_role("link", name="Sub-partners").click()
    check_screen(page, "partner-sub-partners")
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Payout email").fill("pat-payouts@example.com")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").wait_for()
    check_screen(page, "partner-settings")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(rf"/p/{slug}/login$"))
    page.close()

    other = browser.new_page()
    _log_in(other, base_url, slug, program.partners["quinn"].email)
    assert other.locator(".figures dd").all_inner_texts()[:2] == ["0", "0"]
    other.get_by_role("link", name="Referrals").click()
    assert "Nobody yet" in other.locator("main").inner_text()
    other.get_by_role("link", name="Reports").click()
    assert "42.00" not in other.locator("main").inner_text()
    assert other.locator("#per-sid").inner_text().count("Nothing in this range") == 1
    other.close()
