"""In Chromium: an admin erases a person from their contact page after ticking the confirmation, follows the
erasure to its report, and a member asks from their account page to be erased; every screen passes axe."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from api.cookies import session_cookie_name
from tenants.isolation import tenant_session
from tests.conftest import TenantHandle
from tests.support.dashboard import check_screen, login_browser
from tests.support.privacy import build_person

pytestmark = pytest.mark.browser


@pytest.mark.usefixtures("worker", "mailbox")
def test_an_admin_erases_a_person_through_the_screens(
    api_server: Any, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    tenant = make_tenant("Erasescreens")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=2)
    rachel = build_person(tenant.tenant_id, first_name="Rachel", last_name="Green", devices=1)
    base = api_server.base_url
    with tenant_session(tenant.tenant_id) as session:
        club = session.execute(
            text("SELECT membership_site_id FROM members WHERE id = :id"), {"id": rachel.member_id}
        ).scalar_one()
    member = browser.new_context()
    member.add_cookies([{"name": session_cookie_name(), "value": rachel.session_id, "url": base}])
    account = member.new_page()
    account.goto(f"{base}/s/{tenant.slug}/m/{club}/account")
    check_screen(account, "member-account-privacy")
    account.get_by_role("button", name="Ask us to erase my data").click()
    account.wait_for_selector("text=You asked on")
    check_screen(account, "member-account-erasure-asked")
    member.close()

    page = browser.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)
    page.goto(f"{base}/app/privacy")
    assert page.get_by_role("button", name=re.compile("^Erase")).count() == 1  # Rachel's request waits
    check_screen(page, "privacy")

    page.goto(f"{base}/app/contacts/{monica.contact_id}")
    page.get_by_role("link", name="Erase this person…").click()
    check_screen(page, "contact-erase-confirm")
    page.get_by_label("I understand that this person's data is deleted for good").check()
    page.get_by_role("button", name=f"Erase {monica.email}").click()
    page.wait_for_url(re.compile(r"/app/privacy/erasures/"))
    for _ in range(100):
        if "done" in page.locator("h1").inner_text():
            break
        page.wait_for_timeout(200)
        page.reload()
    assert "done" in page.locator("h1").inner_text()
    assert page.get_by_role("cell", name="visits").count() == 1
    check_screen(page, "erasure-report")
    page.close()
