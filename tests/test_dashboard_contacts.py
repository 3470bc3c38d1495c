"""Staff find contacts by where they came from, page through them, export them, and open one person's page:
fields (sensitive ones masked until an editor reveals one, audited), devices, touches and the timeline across
devices; an editor merges two contacts after a confirmation step; nobody reaches another tenant's people."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from tenants.conversions.consent import set_ads_consent, set_analytics_consent
from tenants.identity.service import link_visitor
from tenants.isolation import tenant_session
from tenants.models import ConsentSource, Evidence, UserRole
from tenants.reports.dimensions import touch_dimension_sql
from tests.support.dashboard import add_staff, check_screen, csrf_of, login_browser, login_http

SOURCES = ("google", "newsletter", None)


def seed_contacts(api: str, tenant: Any, count: int) -> list[str]:
    """``count`` contacts through the REST API, with a sensitive custom field; each third has no touch, the
    rest a first touch from google or the newsletter (stored as ingest stores a touch)."""
    headers = tenant.headers
    for body in (
        {"key": "plan", "label": "Plan", "type": "text"},
        {"key": "salary", "label": "Salary", "type": "number", "sensitive": True},
    ):
        assert httpx.post(f"{api}/api/v1/contact-fields", json=body, headers=headers).status_code == 201
    ids = []
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        for i in range(count):
            body = {
                "email": f"person{i}@example.com",
                "first_name": f"P{i}",
                "phone": "+14155550100",
                "custom": {"plan": "gold" if i % 2 else "free", "salary": 1000 + i},
            }
            answer = client.post("/api/v1/contacts", json=body)
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
    with tenant_session(tenant.tenant_id) as session:
        for i, contact_id in enumerate(ids):
            source = SOURCES[i % 3]
            if source is None:
                continue
            touch = {"landing_page": "https://shop.example/", "utm": {"source": source, "medium": "cpc"}}
            session.execute(
                text("UPDATE contacts SET first_touch = CAST(:t AS jsonb) WHERE id = :id"),
                {"t": json.dumps(touch), "id": contact_id},
            )
    return ids


def sql_contacts(tenant: Any, where: str, **params: Any) -> set[str]:
    """The live contacts a scan of the table selects, written as the reports' dimension SQL."""
    with tenant_session(tenant.tenant_id) as session:
        rows = session.execute(
            text(f"SELECT id FROM contacts WHERE merged_into IS NULL AND {where}"),
            params,
        )
        return {str(row[0]) for row in rows}


def listed_ids(staff: httpx.Client, query: str) -> list[str]:
    """Every contact id the dashboard list shows for ``query``, following its Older links to the end."""
    seen: list[str] = []
    address = f"/app/contacts?{query}"
    while address:
        html = staff.get(address).text
        seen += [part.split('"')[0] for part in html.split('href="/app/contacts/')[1:] if part[:36].count("-") == 4]
        older = [part.split('"')[0] for part in html.split('rel="next" href="')[1:]]
        address = older[0].replace("&amp;", "&") if older else ""
    return seen


def test_filters_and_pages_show_exactly_the_contacts_a_scan_selects(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Filterco")
    seed_contacts(api_server.base_url, tenant, 120)
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    source_sql = touch_dimension_sql("first_touch")["source"]
    google = sql_contacts(tenant, f"{source_sql} = 'google'")
    assert len(google) == 40
    shown = listed_ids(staff, "touch=first&source=google")
    assert len(shown) == len(set(shown)) == 40  # every row once across the keyset pages
    assert set(shown) == google
    direct = sql_contacts(tenant, f"{source_sql} = '(direct)'")
    assert set(listed_ids(staff, "source=%28direct%29")) == direct and len(direct) == 40
    gold = sql_contacts(tenant, "custom->>'plan' = 'gold'")
    assert set(listed_ids(staff, "field.plan=gold&source=google")) == gold & google
    # The count above the list is the list's.
    assert "40 contacts" in staff.get("/app/contacts?source=google").text


def test_a_bad_filter_is_a_4xx_with_its_reason(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Badfilter")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    for query, reason in (
        ("created_from=yesterday", "the date is invalid"),
        ("field.nope=1", "unknown field"),
        ("touch=middle", "the touch is unknown"),
        ("cursor=garbage", "the cursor is not one"),
    ):
        answer = staff.get(f"/app/contacts?{query}")
        assert 400 <= answer.status_code < 500, (query, answer.status_code)
        assert reason in answer.text, (query, answer.text[-500:])


def test_the_rest_list_pages_every_contact_once_both_ways(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Restpages")
    ids = seed_contacts(api_server.base_url, tenant, 23)
    api = httpx.Client(base_url=api_server.base_url, headers=tenant.headers)
    pages = [api.get("/api/v1/contacts", params={"limit": 5}).json()]
    while pages[-1]["next_cursor"]:
        pages.append(api.get("/api/v1/contacts", params={"limit": 5, "cursor": pages[-1]["next_cursor"]}).json())
    forward = [c["id"] for page in pages for c in page["items"]]
    assert forward == list(reversed(ids))
    back = api.get("/api/v1/contacts", params={"limit": 5, "before": pages[-1]["previous_cursor"]}).json()
    assert [c["id"] for c in back["items"]] == [c["id"] for c in pages[-2]["items"]]
    assert api.get("/api/v1/contacts", params={"source": "google"}).json()["items"]
    assert api.get("/api/v1/contacts", params={"field.salary": "lots"}).status_code == 422


def test_the_csv_export_streams_every_row_and_hides_sensitive_columns_from_a_viewer(
    api_server: Any, make_tenant: Any
) -> None:
    tenant = make_tenant("Exportco")
    ids = seed_contacts(api_server.base_url, tenant, 60)
    with tenant_session(tenant.tenant_id) as session:  # a few thousand more, as a big list
        session.execute(
            text(
                "INSERT INTO contacts (tenant_id, id, email, custom, created_at, updated_at)"
                " SELECT :t, gen_random_uuid(), 'bulk' || i || '@example.com', '{\"plan\": \"free\"}',"
                " now() - i * interval '1 second', now() FROM generate_series(1, 3000) i"
            ),
            {"t": tenant.tenant_id},
        )
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    with owner.stream("GET", "/app/contacts/export.csv") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        body = "".join(answer.iter_text())
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == len(sql_contacts(tenant, "true")) == 3060
    assert {"id", "email", "phone", "plan", "salary", "first_source", "last_campaign"} <= set(rows[0])
    by_id = {row["id"]: row for row in rows}
    assert by_id[ids[1]]["salary"] == "1001" and by_id[ids[1]]["first_source"] == "newsletter"
    google = owner.get("/app/contacts/export.csv?source=google").text
    assert len(list(csv.DictReader(io.StringIO(google)))) == 20

    add_staff(tenant.tenant_id, "viewer@exportco.example", UserRole.VIEWER)
    viewer = login_http(api_server.base_url, tenant.slug, "viewer@exportco.example")
    seen = list(csv.DictReader(io.StringIO(viewer.get("/app/contacts/export.csv").text)))
    assert len(seen) == 3060
    assert "phone" not in seen[0] and "salary" not in seen[0] and "plan" in seen[0] and "email" in seen[0]
    with tenant_session(tenant.tenant_id) as session:
        exports = session.execute(
            text("SELECT actor_email, detail FROM audit_log WHERE action = 'contacts.export' ORDER BY at")
        ).all()
    assert [(e[0], e[1]["sensitive"]) for e in exports] == [
        (tenant.owner_email, True),
        (tenant.owner_email, True),
        ("viewer@exportco.example", False),
    ]


def two_devices(tenant: Any, contact_id: str) -> list[uuid.UUID]:
    """The contact's laptop (a form) and phone (an email-link click), as identity links them."""
    devices = [uuid.uuid4(), uuid.uuid4()]
    with tenant_session(tenant.tenant_id) as session:
        link_visitor(session, visitor_id=devices[0], contact_id=uuid.UUID(contact_id), evidence=Evidence.FORM)
        link_visitor(session, visitor_id=devices[1], contact_id=uuid.UUID(contact_id), evidence=Evidence.EMAIL_CLICK)
    return devices


def test_the_contact_page_shows_devices_timeline_and_masks_until_an_editor_reveals(
    api_server: Any, make_tenant: Any
) -> None:
    tenant = make_tenant("Revealco")
    ids = seed_contacts(api_server.base_url, tenant, 3)
    devices = two_devices(tenant, ids[0])
    with tenant_session(tenant.tenant_id) as session:  # the laptop's banner answers; the phone never did
        set_analytics_consent(session, devices[0], False, ConsentSource.TRACKER)
        set_ads_consent(session, devices[0], True, ConsentSource.API)
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page = owner.get(f"/app/contacts/{ids[0]}").text
    assert all(str(device) in page for device in devices)
    consent_cells = [
        row.split('<td class="consent">')[1].split("</td>")[0] for row in page.split('<tr class="device">')[1:]
    ]
    laptop = consent_cells[sorted(devices).index(devices[0])]
    assert "analytics: no (tracker" in laptop and "ads: yes (api" in laptop, laptop
    assert consent_cells[sorted(devices).index(devices[1])].strip() == "—"
    assert page.count('data-kind="identity.linked"') == 2
    assert "1000" not in page and "+14155550100" not in page  # salary and phone masked
    revealed = owner.post(f"/app/contacts/{ids[0]}/reveal", data={"csrf": csrf_of(page), "field": "custom.salary"})
    assert revealed.status_code == 200 and "1000" in revealed.text

    add_staff(tenant.tenant_id, "viewer@revealco.example", UserRole.VIEWER)
    viewer = login_http(api_server.base_url, tenant.slug, "viewer@revealco.example")
    viewer_page = viewer.get(f"/app/contacts/{ids[0]}").text
    assert "Reveal" not in viewer_page and "Edit" not in viewer_page
    refused = viewer.post(f"/app/contacts/{ids[0]}/reveal", data={"csrf": csrf_of(viewer_page), "field": "phone"})
    assert refused.status_code == 403 and "+14155550100" not in refused.text
    edit = viewer.post(f"/app/contacts/{ids[0]}/edit", data={"csrf": csrf_of(viewer_page), "first_name": "X"})
    assert edit.status_code == 403
    with tenant_session(tenant.tenant_id) as session:
        reveals = session.execute(
            text("SELECT actor_email, subject, detail FROM audit_log WHERE action = 'contact.reveal'")
        ).all()
        first_name = session.execute(text("SELECT first_name FROM contacts WHERE id = :id"), {"id": ids[0]}).one()
    assert [(r[0], r[1], r[2]) for r in reveals] == [(tenant.owner_email, ids[0], {"field": "custom.salary"})]
    assert first_name[0] == "P0"


def test_an_editor_edits_and_merges_after_confirming(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Mergeco")
    ids = seed_contacts(api_server.base_url, tenant, 2)
    add_staff(tenant.tenant_id, "editor@mergeco.example", UserRole.EDITOR)
    editor = login_http(api_server.base_url, tenant.slug, "editor@mergeco.example")
    token = csrf_of(editor.get(f"/app/contacts/{ids[0]}/edit").text)
    saved = editor.post(f"/app/contacts/{ids[0]}/edit", data={"csrf": token, "last_name": "Geller"})
    assert saved.status_code == 303
    confirm = editor.get(f"/app/contacts/{ids[0]}/merge", params={"email": "person1@example.com"})
    assert (
        confirm.status_code == 200 and "person1@example.com" in confirm.text and "person0@example.com" in confirm.text
    )
    assert editor.get(f"/app/contacts/{ids[0]}/merge", params={"email": "nobody@example.com"}).status_code == 404
    merged = editor.post(
        f"/app/contacts/{ids[0]}/merge", data={"csrf": csrf_of(confirm.text), "other_contact_id": ids[1]}
    )
    assert merged.status_code == 303
    with tenant_session(tenant.tenant_id) as session:
        other = session.execute(text("SELECT merged_into FROM contacts WHERE id = :id"), {"id": ids[1]}).one()
        kept = session.execute(text("SELECT last_name FROM contacts WHERE id = :id"), {"id": ids[0]}).one()
        actions = [r[0] for r in session.execute(text("SELECT action FROM audit_log ORDER BY at"))]
    assert str(other[0]) == ids[0] and kept[0] == "Geller"
    assert actions == ["contact.update", "contact.merge"]


def test_another_tenants_contacts_and_visitors_are_not_found(api_server: Any, make_tenant: Any) -> None:
    mine, theirs = make_tenant("Minecont"), make_tenant("Theircont")
    their_ids = seed_contacts(api_server.base_url, theirs, 1)
    their_device = two_devices(theirs, their_ids[0])[0]
    staff = login_http(api_server.base_url, mine.slug, mine.owner_email)
    for address in (
        f"/app/contacts/{their_ids[0]}",
        f"/app/contacts/{their_ids[0]}/edit",
        f"/app/contacts/{their_ids[0]}/merge",
        f"/app/visitors/{their_device}",
    ):
        assert staff.get(address).status_code == 404, address
    token = csrf_of(staff.get("/app/contacts").text)
    reveal = staff.post(f"/app/contacts/{their_ids[0]}/reveal", data={"csrf": token, "field": "phone"})
    assert reveal.status_code == 404
    assert "person0@example.com" not in staff.get("/app/contacts/export.csv").text


def test_every_contacts_and_visitors_screen_passes_axe(api_server: Any, make_tenant: Any, browser: Any) -> None:
    tenant = make_tenant("Screensco")
    ids = seed_contacts(api_server.base_url, tenant, 12)
    device = two_devices(tenant, ids[0])[0]
    page = browser.new_page()
    login_browser(page, api_server.base_url, tenant.slug, tenant.owner_email)
    base = api_server.base_url
    for address, name in (
        ("/app/contacts", "contacts"),
        (f"/app/contacts/{ids[0]}", "contact"),
        (f"/app/contacts/{ids[0]}/merge?email=person1%40example.com", "merge-confirm"),
        ("/app/visitors?is_bot=any", "visitors"),
        ("/app/visits", "visits"),
        (f"/app/visitors/{device}", "visitor"),
    ):
        page.goto(f"{base}{address}")
        assert page.get_by_role("heading", level=1).count() == 1
        check_screen(page, name)
    page.goto(f"{base}/app/contacts/{ids[0]}")
    page.get_by_role("button", name="Reveal custom.salary").click()
    page.wait_for_selector("text=1000")
    page.close()


def test_a_refused_contact_edit_comes_back_with_what_was_typed_and_the_reason_by_the_field(
    api_server: Any, make_tenant: Any, browser: Any
) -> None:
    """A salary that is not a number, or another contact's email, is corrected in place; nothing is saved."""
    tenant = make_tenant("Editco")
    ids = seed_contacts(api_server.base_url, tenant, 2)
    base = api_server.base_url
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)
    page.goto(f"{base}/app/contacts/{ids[0]}/edit")
    assert page.get_by_label("Salary").input_value() == "", "a sensitive value is never put into the form"
    page.get_by_label("First name").fill("Rachel")
    page.get_by_label("Salary").fill("lots")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save").click()
    assert posted.value.status == 422
    salary = page.locator('input[name="custom.salary"]')
    assert salary.input_value() == "lots" and salary.get_attribute("aria-invalid") == "true"
    assert page.locator("#error-custom-salary").inner_text() == "must be a number"
    assert page.get_by_label("First name").input_value() == "Rachel"
    check_screen(page, "contact-edit-refused")

    salary.fill("")
    page.get_by_label("Email").fill("person1@example.com")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save").click()
    assert posted.value.status == 409
    email = page.locator('input[name="email"]')
    assert email.input_value() == "person1@example.com" and email.get_attribute("aria-invalid") == "true"
    assert "exists" in page.locator("#error-email").inner_text()
    assert page.get_by_label("First name").input_value() == "Rachel"
    context.close()
    with tenant_session(tenant.tenant_id) as session:
        stored = session.execute(text("SELECT email, first_name FROM contacts WHERE id = :id"), {"id": ids[0]}).one()
    assert tuple(stored) == ("person0@example.com", "P0")
