"""The tenant's partner program, purchases and Stripe in the dashboard: staff run their program, review partners,
follow sales and connect Stripe on the same services the REST API uses, each action within their role."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text

from tenants.audit.service import list_actions
from tenants.isolation import tenant_session
from tenants.models import PartnerStatus, UserRole
from tenants.partners import service as partners
from tests.conftest import LiveServer, TenantHandle
from tests.support.dashboard import add_staff, check_screen, csrf_of, login_browser, login_http
from tests.support.partners import ORIGIN, make_program
from tests.support.stripe import checkout_completed, signed_delivery

SECRET = "whsec_dashboardtestsecret0123456789"


def _post(staff: httpx.Client, path: str, data: dict[str, Any], *, page: str) -> httpx.Response:
    """Post a dashboard form with the page's CSRF token, as the browser does."""
    return staff.post(path, data={"csrf": csrf_of(staff.get(page).text), **data})


def _actions(tenant: TenantHandle) -> list[tuple[str, str | None, dict[str, Any]]]:
    with tenant_session(tenant.tenant_id) as session:
        return [(entry.action, entry.subject, entry.detail) for entry in list_actions(session)]


def _applicant(tenant: TenantHandle, program_id: UUID, email: str) -> UUID:
    with tenant_session(tenant.tenant_id) as session:
        return partners.create_partner(session, program_id=program_id, email=email).id


def _status(tenant: TenantHandle, partner_id: UUID) -> str:
    with tenant_session(tenant.tenant_id) as session:
        return str(partners.get_partner(session, partner_id).status)


def _purchase(server: LiveServer, tenant: TenantHandle, external_id: str, amount: int = 5000) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base_url}/api/v1/purchases",
        headers=tenant.headers,
        json={
            "external_id": external_id,
            "amount": amount,
            "tax": 500,
            "currency": "EUR",
            "email": f"buyer-{external_id}@example.com",
            "items": [{"product": "course", "name": "The course", "quantity": 1, "unit_amount": amount - 500}],
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_viewer_sees_applications_but_cannot_approve_and_an_editor_can(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Reviewing partners changes who earns money: a viewer reads the list, only an editor or above decides."""
    tenant = make_tenant("Reviewco")
    program = make_program(tenant)
    applicant = _applicant(tenant, program.program_id, "ann@applicants.example")
    add_staff(tenant.tenant_id, "view@reviewco.example", UserRole.VIEWER)
    add_staff(tenant.tenant_id, "ed@reviewco.example", UserRole.EDITOR)
    viewer = login_http(api_server.base_url, tenant.slug, "view@reviewco.example")

    listed = viewer.get("/app/partners?status=applied")
    assert listed.status_code == 200 and "ann@applicants.example" in listed.text
    assert 'value="approve"' not in listed.text and "Approve" not in listed.text
    shown = viewer.get(f"/app/partners/{applicant}")
    assert shown.status_code == 200 and 'value="approve"' not in shown.text
    refused = _post(viewer, f"/app/partners/{applicant}/status", {"action": "approve"}, page="/app/partners")
    assert refused.status_code == 403
    assert "takes the editor role" in refused.text
    assert _status(tenant, applicant) == "applied"

    editor = login_http(api_server.base_url, tenant.slug, "ed@reviewco.example")
    forged = editor.post(f"/app/partners/{applicant}/status", data={"action": "approve"})
    assert forged.status_code == 403, "a change without the page's CSRF token is refused"
    assert _status(tenant, applicant) == "applied"
    page = editor.get("/app/partners?status=applied").text
    assert 'value="approve"' in page and 'value="reject"' in page and 'value="suspend"' not in page
    approved = _post(editor, f"/app/partners/{applicant}/status", {"action": "approve"}, page="/app/partners")
    assert approved.status_code == 303, approved.text
    assert _status(tenant, applicant) == "approved"
    assert ("partner.approve", f"partner:{applicant}", {"status": "approved"}) in _actions(tenant)
    assert "ann@applicants.example" not in editor.get("/app/partners?status=applied").text
    after = editor.get(f"/app/partners/{applicant}").text
    assert re.search(r"<code>ann-[0-9a-f]{6}</code>", after), "approval gives the partner a link code"
    assert f"{ORIGIN}/?ref=ann-" in after

    again = _post(editor, f"/app/partners/{applicant}/status", {"action": "reject"}, page="/app/partners")
    assert again.status_code == 409, "an approved partner is suspended, not rejected"
    assert _status(tenant, applicant) == "approved"
    suspended = _post(editor, f"/app/partners/{applicant}/status", {"action": "suspend"}, page="/app/partners")
    assert suspended.status_code == 303
    assert _status(tenant, applicant) == "suspended"


def test_an_editor_sets_a_partners_payout_email_and_a_viewer_cannot(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Payouts go to this address: only an editor or above changes it, every change is in the audit log, and a
    mistyped address comes back on the partner's page with the reason by the field."""
    tenant = make_tenant("Payoutco")
    program = make_program(tenant, "pat")
    pat = program.partners["pat"].id
    add_staff(tenant.tenant_id, "view@payoutco.example", UserRole.VIEWER)
    add_staff(tenant.tenant_id, "ed@payoutco.example", UserRole.EDITOR)
    page = f"/app/partners/{pat}"
    viewer = login_http(api_server.base_url, tenant.slug, "view@payoutco.example")
    assert 'name="payout_email"' not in viewer.get(page).text
    refused = _post(viewer, f"{page}/payout-email", {"payout_email": "bank@pat.example"}, page=page)
    assert refused.status_code == 403

    editor = login_http(api_server.base_url, tenant.slug, "ed@payoutco.example")
    forged = editor.post(f"{page}/payout-email", data={"payout_email": "thief@evil.example"})
    assert forged.status_code == 403, "a change without the page's CSRF token is refused"
    typo = _post(editor, f"{page}/payout-email", {"payout_email": "bank@"}, page=page)
    assert typo.status_code == 422 and 'id="error-payout_email"' in typo.text and 'value="bank@"' in typo.text
    saved = _post(editor, f"{page}/payout-email", {"payout_email": " bank@Pat.EXAMPLE "}, page=page)
    assert saved.status_code == 303, saved.text
    with tenant_session(tenant.tenant_id) as session:
        assert partners.get_partner(session, pat).payout_email == "bank@pat.example"
    assert 'value="bank@pat.example"' in editor.get(page).text
    assert ("partner.update", f"partner:{pat}", {"fields": ["payout_email"]}) in _actions(tenant)
    assert (
        _post(editor, f"{page}/payout-email", {"payout_email": "x@y.example"}, page="/app/partners").status_code == 303
    )
    unknown = _post(editor, f"/app/partners/{UUID(int=1)}/payout-email", {"payout_email": "x@y.example"}, page=page)
    assert unknown.status_code == 404


def test_program_terms_typed_wrong_come_back_with_the_reason_by_the_field(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Termsco")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    terms = {
        "name": "Friends",
        "landing_url": "https://termsco.example/",
        "currency": "eur",
        "referrer_rule": "last",
        "cookie_window_days": "0",
        "tiers": "2",
        "hold_days": "14",
        "minimum_payout": "5000",
        "recurring_months": "",
        "self_referral": "hold",
        "shared_referral_fields": "full",
    }
    refused = _post(owner, "/app/partner-programs", terms, page="/app/partner-programs/new")
    assert refused.status_code == 422
    assert 'id="error-cookie_window_days"' in refused.text and "&gt;= 1" in refused.text
    assert 'value="https://termsco.example/"' in refused.text, "what was typed is kept"
    with tenant_session(tenant.tenant_id) as session:
        assert partners.list_programs(session) == []

    created = _post(owner, "/app/partner-programs", {**terms, "cookie_window_days": "45"}, page="/app/partner-programs")
    assert created.status_code == 303, created.text
    program_id = UUID(created.headers["location"].rsplit("/", 1)[1])
    api = httpx.get(f"{api_server.base_url}/api/v1/partner-programs/{program_id}", headers=tenant.headers).json()
    assert (api["currency"], api["referrer_rule"], api["cookie_window_days"], api["tiers"]) == ("EUR", "last", 45, 2)
    assert (api["recurring_months"], api["self_referral"], api["shared_referral_fields"]) == (None, "hold", "full")
    assert api["auto_approve"] is False

    changed = _post(
        owner,
        f"/app/partner-programs/{program_id}",
        {**terms, "cookie_window_days": "45", "recurring_months": "12", "auto_approve": "on"},
        page=f"/app/partner-programs/{program_id}",
    )
    assert changed.status_code == 303
    api = httpx.get(f"{api_server.base_url}/api/v1/partner-programs/{program_id}", headers=tenant.headers).json()
    assert (api["recurring_months"], api["auto_approve"]) == (12, True)
    updates = [detail for action, _, detail in _actions(tenant) if action == "program.update"]
    assert updates == [{"fields": ["auto_approve", "recurring_months"]}]

    too_much = _post(
        owner,
        f"/app/partner-programs/{program_id}/products",
        {"product": "course", "level1-kind": "percent", "level1-value": "12000", "level2-kind": "flat"},
        page=f"/app/partner-programs/{program_id}",
    )
    assert too_much.status_code == 422
    assert 'id="error-level1-value"' in too_much.text and 'value="12000"' in too_much.text
    saved = _post(
        owner,
        f"/app/partner-programs/{program_id}/products",
        {
            "product": "course",
            "level1-kind": "percent",
            "level1-value": "3000",
            "level2-kind": "flat",
            "level2-value": "500",
        },
        page=f"/app/partner-programs/{program_id}",
    )
    assert saved.status_code == 303
    products = httpx.get(
        f"{api_server.base_url}/api/v1/partner-programs/{program_id}/products", headers=tenant.headers
    ).json()
    new_partner = {"program_id": str(program_id), "email": "Pat@Partners.example", "status": "approved"}
    added = _post(owner, "/app/partners", new_partner, page="/app/partners")
    assert added.status_code == 303, added.text
    partner_id = UUID(added.headers["location"].rsplit("/", 1)[1])
    assert _status(tenant, partner_id) == "approved"
    twice = _post(owner, "/app/partners", new_partner, page="/app/partners")
    assert twice.status_code == 409
    assert 'id="error-email"' in twice.text and "is a partner already" in twice.text
    assert 'value="Pat@Partners.example"' in twice.text
    assert products == [
        {"product": "course", "level1": {"kind": "percent", "value": 3000}, "level2": {"kind": "flat", "value": 500}}
    ]


@pytest.mark.browser
def test_an_editor_creates_a_program_and_a_promo_code_in_the_browser(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """The whole setup a new tenant does by hand: a program, then a partner's code; a mistyped code is corrected
    in place, not typed again."""
    tenant = make_tenant("Browserco")
    add_staff(tenant.tenant_id, "ed@browserco.example", UserRole.EDITOR)
    base = api_server.base_url
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, "ed@browserco.example")

    page.get_by_role("link", name="Partners", exact=True).first.click()
    page.get_by_role("link", name="Programs").click()
    check_screen(page, "partner-programs-empty")
    page.get_by_role("link", name="New program").click()
    page.get_by_label("Name", exact=True).fill("Friends of Browserco")
    page.get_by_label("Landing page (referral links point here)").fill("https://browserco.example/")
    page.get_by_label("Who is credited when several partners referred the buyer").select_option("last")
    page.get_by_label("Cookie window (days after a click that it still credits)").fill("60")
    page.get_by_label("Approve applicants at once").check()
    check_screen(page, "partner-program-new")
    page.get_by_role("button", name="Create program").click()
    page.wait_for_url(re.compile(r"/app/partner-programs/[0-9a-f-]{36}$"))
    assert "Program created" in page.locator(".flash").inner_text()
    program_id = UUID(page.url.rsplit("/", 1)[1])
    page.get_by_label("Product key").fill("course")
    page.get_by_label("Value of level 1 rate").fill("2500")
    page.get_by_role("button", name="Save product").click()
    page.wait_for_url(re.compile(r"/app/partner-programs/[0-9a-f-]{36}$"))
    assert page.get_by_role("cell", name="25.00 %").count() == 1
    check_screen(page, "partner-program")
    with tenant_session(tenant.tenant_id) as session:
        program = partners.get_program(session, program_id)
        assert (program.referrer_rule, program.cookie_window_days, program.auto_approve) == ("last", 60, True)
        partner = partners.create_partner(
            session, program_id=program_id, email="pat@partners.example", status=PartnerStatus.APPROVED
        )
    page.goto(f"{base}/app/partners")
    check_screen(page, "partners")
    page.get_by_role("link", name="pat@partners.example").click()
    page.get_by_label("Code (a-z, 0-9 and -)").fill("Pat@Summer")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Create code").click()
    assert posted.value.status == 422
    code = page.get_by_label("Code (a-z, 0-9 and -)")
    assert code.input_value() == "Pat@Summer"
    assert code.get_attribute("aria-invalid") == "true"
    assert "a-z, 0-9 and -" in page.locator("#error-code").inner_text()
    check_screen(page, "partner-code-refused")
    code.fill("PAT-SUMMER")
    page.get_by_role("button", name="Create code").click()
    page.wait_for_url(re.compile(rf"/app/partners/{partner.id}$"))
    assert "Code pat-summer created" in page.locator(".flash").inner_text()
    check_screen(page, "partner")
    with tenant_session(tenant.tenant_id) as session:
        codes = {(c.code, str(c.kind)) for c in partners.list_codes(session, partner_id=partner.id)}
    assert ("pat-summer", "promo") in codes
    context.close()


def test_another_tenants_partner_program_and_purchase_ids_are_not_found(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    theirs = make_tenant("Theirpartners")
    their_program = make_program(theirs, "zed")
    zed = their_program.partners["zed"]
    their_purchase = _purchase(api_server, theirs, "their-order")
    ours = make_tenant("Ourpartners")
    owner = login_http(api_server.base_url, ours.slug, ours.owner_email)
    for path in (
        f"/app/partners/{zed.id}",
        f"/app/partner-programs/{their_program.program_id}",
        f"/app/purchases/{their_purchase['id']}",
    ):
        assert owner.get(path).status_code == 404, path
    changes = {
        f"/app/partners/{zed.id}/status": {"action": "suspend"},
        f"/app/partners/{zed.id}/codes": {"code": "mine-now", "kind": "promo"},
        f"/app/partner-programs/{their_program.program_id}/products": {"product": "x", "level1-value": "1"},
        f"/app/purchases/{their_purchase['id']}/refunds": {"amount": "100"},
    }
    for path, data in changes.items():
        assert _post(owner, path, data, page="/app/partners").status_code == 404, path
    assert their_purchase["external_id"] not in owner.get("/app/purchases").text
    assert "zed@partners.example" not in owner.get("/app/partners").text
    assert _status(theirs, zed.id) == "approved"
    with tenant_session(theirs.tenant_id) as session:
        assert "mine-now" not in {c.code for c in partners.list_codes(session)}


@pytest.mark.browser
def test_the_stripe_signing_secret_is_stored_but_never_shown_back(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """The secret lets anyone forge sales: once stored, no page, refusal or audit entry shows it."""
    tenant = make_tenant("Stripeco")
    add_staff(tenant.tenant_id, "ed@stripeco.example", UserRole.EDITOR)
    editor = login_http(api_server.base_url, tenant.slug, "ed@stripeco.example")
    shown = editor.get("/app/integrations/stripe")
    assert shown.status_code == 200 and "No signing secret is stored yet" in shown.text
    webhook_url = re.search(r'<pre id="webhook-url">([^<]+)</pre>', shown.text)
    assert webhook_url, shown.text
    api = httpx.get(f"{api_server.base_url}/api/v1/integrations/stripe", headers=tenant.headers).json()
    assert webhook_url.group(1) == api["webhook_url"]
    for event in api["events"]:
        assert f"<code>{event}</code>" in shown.text
    assert 'name="signing_secret"' not in shown.text, "an editor is not offered the secret's form"
    refused = _post(editor, "/app/integrations/stripe", {"signing_secret": SECRET}, page="/app/integrations/stripe")
    assert refused.status_code == 403

    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    typo = "whsec bad secret typed"
    bad = _post(owner, "/app/integrations/stripe", {"signing_secret": typo}, page="/app/integrations/stripe")
    assert bad.status_code == 422 and 'id="error-signing_secret"' in bad.text
    assert typo not in bad.text
    stored = _post(owner, "/app/integrations/stripe", {"signing_secret": SECRET}, page="/app/integrations/stripe")
    assert stored.status_code == 303
    assert httpx.get(f"{api_server.base_url}/api/v1/integrations/stripe", headers=tenant.headers).json()[
        "signing_secret_set"
    ]
    after = owner.get("/app/integrations/stripe").text
    assert "A signing secret is stored" in after and SECRET not in after
    assert SECRET not in editor.get("/app/integrations/stripe").text
    assert all(SECRET not in str(entry) for entry in _actions(tenant))
    assert ("stripe.secret.set", "integration:stripe", {}) in _actions(tenant)

    event = checkout_completed(session_id="cs_test_dash", amount_total=4200, email="monica@example.com")
    body, headers = signed_delivery(event, SECRET)
    hook = "/hooks/" + webhook_url.group(1).split("/hooks/", 1)[1]
    delivered = httpx.post(f"{api_server.base_url}{hook}", content=body, headers=headers)
    assert delivered.status_code == 200, delivered.text
    events = owner.get("/app/integrations/stripe").text
    assert event["id"] in events and "checkout.session.completed" in events

    context = browser.new_context()
    page = context.new_page()
    login_browser(page, api_server.base_url, tenant.slug, tenant.owner_email)
    page.get_by_role("link", name="Stripe", exact=True).click()
    assert page.get_by_label("Signing secret").input_value() == ""
    check_screen(page, "stripe")
    context.close()


@pytest.mark.browser
def test_purchases_are_listed_filtered_and_refunded_by_an_admin(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    tenant = make_tenant("Salesco")
    first = _purchase(api_server, tenant, "order-1", 5000)
    second = _purchase(api_server, tenant, "order-2", 8000)
    add_staff(tenant.tenant_id, "ed@salesco.example", UserRole.EDITOR)
    add_staff(tenant.tenant_id, "admin@salesco.example", UserRole.ADMIN)
    editor = login_http(api_server.base_url, tenant.slug, "ed@salesco.example")
    listed = editor.get("/app/purchases").text
    assert listed.index("order-2") < listed.index("order-1"), "newest first"
    page = editor.get(f"/app/purchases/{first['id']}").text
    assert "The course" in page and "<code>course</code>" in page and 'name="amount"' not in page
    assert _post(editor, f"/app/purchases/{first['id']}/refunds", {}, page="/app/purchases").status_code == 403

    admin = login_http(api_server.base_url, tenant.slug, "admin@salesco.example")
    too_much = _post(admin, f"/app/purchases/{first['id']}/refunds", {"amount": "6000"}, page="/app/purchases")
    assert too_much.status_code == 422
    assert 'id="error-amount"' in too_much.text and "must be at most 5000" in too_much.text
    assert 'value="6000"' in too_much.text
    part = _post(
        admin, f"/app/purchases/{first['id']}/refunds", {"amount": "2000", "refund_id": "r-1"}, page="/app/purchases"
    )
    assert part.status_code == 303
    again = _post(
        admin, f"/app/purchases/{first['id']}/refunds", {"amount": "2000", "refund_id": "r-1"}, page="/app/purchases"
    )
    assert again.status_code == 303, "the same refund id twice is one refund"
    api = httpx.get(f"{api_server.base_url}/api/v1/purchases/{first['id']}", headers=tenant.headers).json()
    assert (api["status"], api["refunded_amount"], len(api["refunds"])) == ("partially_refunded", 2000, 1)
    assert [d for a, _, d in _actions(tenant) if a == "purchase.refund"] == [{"amount": 2000}]
    assert _post(admin, f"/app/purchases/{second['id']}/refunds", {}, page="/app/purchases").status_code == 303
    refunded = admin.get("/app/purchases?status=refunded").text
    assert "order-2" in refunded and "order-1" not in refunded
    by_contact = admin.get("/app/purchases", params={"contact": "buyer-order-1@example.com"}).text
    assert "order-1" in by_contact and "order-2" not in by_contact
    assert "order-1" not in admin.get("/app/purchases?source=stripe").text

    for n in range(3, 53):  # past one page of 50
        _purchase(api_server, tenant, f"order-{n}", 1000)
    first_page = admin.get("/app/purchases").text
    older = re.search(r'href="(/app/purchases\?[^"]*cursor=[^"]+)"', first_page)
    assert older and "order-1<" not in first_page
    assert "order-1<" in admin.get(older.group(1).replace("&amp;", "&")).text

    context = browser.new_context()
    page_ = context.new_page()
    login_browser(page_, api_server.base_url, tenant.slug, "admin@salesco.example")
    page_.get_by_role("link", name="Purchases", exact=True).click()
    check_screen(page_, "purchases")
    page_.goto(f"{api_server.base_url}/app/purchases/{first['id']}")
    check_screen(page_, "purchase")
    context.close()


def _land(session: Any, program: Any, visitor_id: UUID, code: str, sid: str | None) -> Any:
    """A landing on ``?ref=code&sid=…`` stored by ingest's own function; returns the envelope (to replay it)."""
    from tenants.models import new_id
    from tenants.tracking.hits import Envelope, Hit
    from tenants.tracking.ingest import store_envelopes

    now = int(datetime.now(UTC).timestamp() * 1000)
    landing = Hit(hit_id=new_id(), ts=now, url=f"{ORIGIN}/?ref={code}", path="/", partner_code=code, partner_sid=sid)
    envelope = Envelope(
        tenant_id=program.tenant.tenant_id,
        site_id=program.site.site_id,
        visitor_id=visitor_id,
        received_at=now,
        hits=[landing],
    )
    store_envelopes(session, [envelope])
    return envelope


def _scan(tenant: TenantHandle) -> dict[str, Any]:
    """The report's numbers counted from the raw rows."""
    with tenant_session(tenant.tenant_id) as session:
        clicks = session.execute(
            text("SELECT partner_id, coalesce(sid, ''), count(*) FROM referral_clicks GROUP BY 1, 2")
        ).all()
        leads = session.execute(
            text(
                """SELECT r.partner_id, coalesce(c.sid, ''), count(*) FROM contact_referrers r
                   LEFT JOIN referral_clicks c ON c.hit_id = r.click_hit_id WHERE r.position = 'first' GROUP BY 1, 2"""
            )
        ).all()
        money = session.execute(
            text(
                """SELECT c.partner_id, p.currency, count(*), count(DISTINCT c.contact_id),
                       sum(p.amount - p.refunded_amount)
                   FROM purchase_credits c JOIN purchases p ON p.id = c.purchase_id
                   WHERE c.status <> 'refused' GROUP BY 1, 2"""
            )
        ).all()
    sub_ids: dict[tuple[UUID, str], tuple[int, int]] = {}
    for partner_id, sid, n in clicks:
        sub_ids[(partner_id, sid)] = (int(n), 0)
    for partner_id, sid, n in leads:
        sub_ids[(partner_id, sid)] = (sub_ids.get((partner_id, sid), (0, 0))[0], int(n))
    return {"sub_ids": sub_ids, "money": {(p, c): (int(n), int(k), int(r)) for p, c, n, k, r in money}}


@pytest.mark.browser
def test_the_partners_report_equals_a_scan_of_clicks_leads_and_purchases(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """Partners are paid on these numbers: the rollups the report reads must count every click and lead once
    (a replayed hit adds nothing) and every purchase net of its refunds, for the partner it credited."""
    from tenants.contacts.service import ContactChanges, upsert_by_email
    from tenants.identity.service import link_visitor
    from tenants.models import Evidence, PurchaseSource, Visitor, new_id
    from tenants.partners.report import partners_report
    from tenants.purchases.service import Buyer, Item, Order, record_purchase, refund_purchase
    from tenants.reports.rollups import compare_referral_rollups, rebuild_referral_rollups

    tenant = make_tenant("Reportco")
    program = make_program(tenant, "pat", "quinn")
    pat, quinn = program.partners["pat"], program.partners["quinn"]
    phone, laptop, other = new_id(), new_id(), new_id()
    with tenant_session(tenant.tenant_id) as session:
        partners.set_product(session, program.program_id, "course", partners.CommissionRate("percent", 3000), None)
    with tenant_session(tenant.tenant_id) as session:
        replayed = _land(session, program, phone, pat.link_code, "news")
        _land(session, program, phone, pat.link_code, "news")
        _land(session, program, laptop, pat.link_code, None)
        _land(session, program, other, quinn.link_code, "blog")
    with tenant_session(tenant.tenant_id) as session:
        from tenants.tracking.ingest import store_envelopes

        store_envelopes(session, [replayed])  # at-least-once delivery: the same hit again
        buyer, created = upsert_by_email(session, ContactChanges(email="monica@example.com"))
        link_visitor(session, visitor_id=phone, contact_id=buyer.id, evidence=Evidence.FORM, new_contact=created)
        # What the history merge gives the contact: the browser's first touch (pat's link).
        visitor = session.get(Visitor, (tenant.tenant_id, phone))
        assert visitor is not None and visitor.first_touch
        buyer.first_touch, buyer.last_touch = visitor.first_touch, visitor.last_touch
        session.add(buyer)
        order = record_purchase(
            session,
            Order(
                source=PurchaseSource.API,
                external_id="o-1",
                amount=10000,
                currency="EUR",
                buyer=Buyer(buyer.id),
                items=[Item("course", 1, 10000)],
            ),
        )
        record_purchase(
            session,
            Order(
                source=PurchaseSource.API,
                external_id="o-2",
                amount=3000,
                currency="EUR",
                buyer=Buyer(buyer.id),
                items=[Item("course", 1, 3000)],
            ),
        )
        refund_purchase(session, order.purchase.id, amount=4000)
        order_id = order.purchase.id
    from tenants.partners.commissions import record_commissions

    with tenant_session(tenant.tenant_id) as session:
        purchase_ids = list(session.execute(text("SELECT id FROM purchases")).scalars())
    # What the purchase workers do, one transaction per purchase as each task has (the worker may be running the
    # same ones): the buyer came through pat's link, so both orders credit pat.
    for purchase_id in purchase_ids:
        with tenant_session(tenant.tenant_id) as session:
            record_commissions(session, purchase_id)

    scan = _scan(tenant)
    assert scan["sub_ids"][(pat.id, "news")] == (2, 1), "the replayed hit counts once; the new contact is a lead"
    today = datetime.now(UTC).date()
    with tenant_session(tenant.tenant_id) as session:
        report = partners_report(session, start=today - timedelta(days=6), end=today)
    assert {(s.partner_id, s.sid): (s.clicks, s.leads) for s in report.sub_ids} == scan["sub_ids"]
    money = {
        (p.partner_id, currency): (p.purchases, p.customers, amount)
        for p in report.partners
        for currency, amount in p.revenue.items()
    }
    assert money == scan["money"] == {(pat.id, "EUR"): (2, 1, 9000)}
    assert {(s.partner_id, s.sid): s.purchases for s in report.sub_ids if s.purchases} == {(pat.id, "news"): 2}
    totals = {p.partner_id: (p.clicks, p.leads) for p in report.partners}
    assert totals == {pat.id: (3, 1), quinn.id: (1, 0)}
    with tenant_session(tenant.tenant_id) as session:
        assert compare_referral_rollups(session, today, today) == []
        session.execute(text("UPDATE referral_rollups SET clicks = clicks + 1 WHERE sid = 'blog'"))
        (drift,) = compare_referral_rollups(session, today, today)
        assert drift.key == (today, quinn.id, "blog"), "the nightly check finds a drifted row"
        rebuild_referral_rollups(session, today, today)
        assert compare_referral_rollups(session, today, today) == []
    with tenant_session(tenant.tenant_id) as session:
        empty = partners_report(session, start=today - timedelta(days=30), end=today - timedelta(days=1))
    assert all((p.clicks, p.leads, p.purchases) == (0, 0, 0) for p in empty.partners), "nothing before today"

    viewer_email = "view@reportco.example"
    add_staff(tenant.tenant_id, viewer_email, UserRole.VIEWER)
    viewer = login_http(api_server.base_url, tenant.slug, viewer_email)
    shown = viewer.get("/app/partners/report").text
    row = re.search(rf'<tr data-partner="{pat.id}">(.*?)</tr>', shown, re.S)
    assert row, shown
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1))).split()[-10:] == [
        "approved",
        "3",
        "1",
        "2",
        "1",
        "90.00",
        "EUR",
        "27.00",  # 30 % of 100.00 less its 40 % refund, and of 30.00
        "EUR",
        "0",
    ]
    assert viewer.get("/app/partners/report?start=2026-02-30").status_code == 422
    purchase_page = viewer.get(f"/app/purchases/{order_id}").text
    assert f"<dd>{pat.link_code}</dd>" in purchase_page, "the touch that brought the buyer is on the purchase"
    assert 'name="amount"' not in purchase_page, "a viewer refunds nothing"
    assert viewer.get(f"/app/partners/report?start={today}&end={today - timedelta(days=1)}").status_code == 422

    context = browser.new_context()
    page = context.new_page()
    login_browser(page, api_server.base_url, tenant.slug, viewer_email)
    page.goto(f"{api_server.base_url}/app/partners/report")
    check_screen(page, "partners-report")
    context.close()
