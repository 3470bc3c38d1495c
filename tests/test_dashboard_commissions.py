"""Commissions and payouts in the dashboard: staff see what partners earned and why, approve or reject what
waits, create the payouts due and mark one paid with the payment's reference, each within their role."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import httpx
from litestar.testing import TestClient

from tenants.models import UserRole
from tests.conftest import LiveServer, TenantHandle
from tests.support.commissions import buy, commissions_of, earning_program, wait_commissions
from tests.support.dashboard import add_staff, check_screen, csrf_of, login_browser, login_http


def _post(staff: httpx.Client, path: str, data: dict[str, Any], *, page: str) -> httpx.Response:
    return staff.post(path, data={"csrf": csrf_of(staff.get(page).text), **data})


def test_staff_approve_commissions_and_pay_them_out_within_their_roles(
    api_server: LiveServer,
    worker: subprocess.Popen[bytes],
    client: TestClient[Any],
    make_tenant: Callable[..., TenantHandle],
    browser: Any,
) -> None:
    tenant = make_tenant("Payoutdesk")
    program = earning_program(tenant, "pat", tiers=1, minimum_payout=500)
    purchase = buy(client, tenant, promo_code="pat-promo")
    (earned,) = wait_commissions(tenant, 1)
    add_staff(tenant.tenant_id, "view@payoutdesk.example", UserRole.VIEWER)
    add_staff(tenant.tenant_id, "ed@payoutdesk.example", UserRole.EDITOR)

    viewer = login_http(api_server.base_url, tenant.slug, "view@payoutdesk.example")
    listed = viewer.get("/app/commissions?status=pending")
    assert listed.status_code == 200
    assert "pat@partners.example" in listed.text and "15.00" in listed.text and "promo code pat-promo" in listed.text
    assert "Approve" not in listed.text, "a viewer is offered no decision"
    refused = _post(viewer, f"/app/commissions/{earned['id']}/approve", {}, page="/app/commissions")
    assert refused.status_code == 403 and commissions_of(tenant)[0]["status"] == "pending"
    shown = viewer.get(f"/app/purchases/{purchase['id']}").text
    assert "pat@partners.example" in shown and "credited by promo code" in shown, "the purchase says who earned"

    editor = login_http(api_server.base_url, tenant.slug, "ed@payoutdesk.example")
    approved = _post(editor, f"/app/commissions/{earned['id']}/approve", {}, page="/app/commissions")
    assert approved.status_code == 303 and commissions_of(tenant)[0]["status"] == "approved"
    assert _post(editor, "/app/payouts", {}, page="/app/payouts").status_code == 403, "only admins pay"

    page = browser.new_page()
    try:
        login_browser(page, api_server.base_url, tenant.slug, tenant.owner_email)
        page.goto(f"{api_server.base_url}/app/commissions")
        check_screen(page, "commissions")
        page.goto(f"{api_server.base_url}/app/payouts")
        page.get_by_role("button", name="Create the payouts due").click()
        page.wait_for_url("**/app/payouts")
        assert "1 payout(s) created" in page.content()
        check_screen(page, "payouts")
        page.get_by_role("link", name="CSV").wait_for()
        page.locator("table a").first.click()
        page.get_by_label("Payment reference").fill("wire-1")
        page.get_by_role("button", name="Mark paid").click()
        page.wait_for_selector("text=Payout marked paid")
        check_screen(page, "payout")
        payout_url = page.url
    finally:
        page.close()
    assert commissions_of(tenant)[0]["status"] == "paid"
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    payout_path = payout_url.removeprefix(api_server.base_url)
    again = _post(owner, f"{payout_path}/paid", {"external_reference": "wire-1"}, page=payout_path)
    assert again.status_code == 303, "the same reference again changes nothing"
    other = _post(owner, f"{payout_path}/paid", {"external_reference": "wire-2"}, page="/app/payouts")
    assert other.status_code == 409 and "the payout was paid with reference wire-1" in other.text
    exported = owner.get(f"{payout_path}/export.csv")
    assert exported.status_code == 200 and "pat@partners.example,15.00,EUR" in exported.text
    assert program.partners["pat"].email == "pat@partners.example"
