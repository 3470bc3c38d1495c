"""The Manage screens: staff set up sites, forms, tracked links, pages and membership sites in the dashboard,
and what they save is exactly what the REST API (and the public endpoints) then serve."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from markupsafe import escape

from tenants.audit.service import list_actions
from tenants.isolation import tenant_session
from tenants.links.service import list_links
from tenants.models import UserRole
from tests.browser import tenant_web_server
from tests.conftest import LiveServer, TenantHandle, make_site, wait_until
from tests.support.dashboard import add_staff, check_screen, csrf_of, login_browser, login_http

ORIGIN = "https://shop.example"


def _api(server: LiveServer, tenant: TenantHandle) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30)


def _post(staff: httpx.Client, path: str, data: dict[str, Any], *, page: str = "/app/sites") -> httpx.Response:
    """Post a dashboard form with the page's CSRF token, as the browser does."""
    return staff.post(path, data={"csrf": csrf_of(staff.get(page).text), **data})


def _actions(tenant: TenantHandle) -> list[tuple[str, dict[str, Any]]]:
    with tenant_session(tenant.tenant_id) as session:
        return [(entry.action, entry.detail) for entry in list_actions(session)]


def _form_id_from(answer: httpx.Response, area: str) -> str:
    assert answer.status_code == 303, answer.text
    found = re.search(rf"/app/{area}/([0-9a-f-]{{36}})", answer.headers["location"])
    assert found, answer.headers["location"]
    return found.group(1)


def test_an_editor_registers_and_changes_a_site_that_the_api_then_serves(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Sitesco")
    add_staff(tenant.tenant_id, "ed@sitesco.example", UserRole.EDITOR)
    staff = login_http(api_server.base_url, tenant.slug, "ed@sitesco.example")
    created = _post(
        staff,
        "/app/sites",
        {
            "name": "Shop",
            "allowed_origins": f"{ORIGIN}\nhttps://www.shop.example",
            "honor_dnt": "on",
            "bot_policy": "drop",
            "partner_params": "ref\naff",
        },
    )
    site_id = _form_id_from(created, "sites")
    api = _api(api_server, tenant)
    site = api.get(f"/api/v1/sites/{site_id}").json()
    assert site["allowed_origins"] == [ORIGIN, "https://www.shop.example"]
    assert (site["honor_dnt"], site["truncate_ip"], site["bot_policy"]) == (True, False, "drop")
    assert site["partner_params"] == ["ref", "aff"]
    screen = staff.get(f"/app/sites/{site_id}").text
    assert str(escape(site["snippet"])) in screen  # the exact tag tenants paste
    assert "Waiting for the first hit" in screen

    changed = _post(
        staff,
        f"/app/sites/{site_id}",
        {
            "name": "Shop",
            "allowed_origins": ORIGIN,
            "honor_dnt": "on",
            "truncate_ip": "on",
            "bot_policy": "drop",
            "partner_params": "ref\naff",
        },
    )
    assert changed.status_code == 303
    site = api.get(f"/api/v1/sites/{site_id}").json()
    assert (site["allowed_origins"], site["truncate_ip"]) == ([ORIGIN], True)
    assert ("site.update", {"fields": ["allowed_origins", "truncate_ip"]}) in _actions(tenant)
    assert any(action == "site.create" for action, _ in _actions(tenant))

    refused = _post(staff, f"/app/sites/{site_id}", {"name": "Shop", "allowed_origins": "not an origin"})
    assert refused.status_code == 422
    assert "allowed_origins" in refused.text
    assert api.get(f"/api/v1/sites/{site_id}").json()["allowed_origins"] == [ORIGIN]


def test_the_first_hit_check_answers_from_the_stored_visits(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Firsthit")
    site = make_site(tenant, [ORIGIN])
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    assert staff.get(f"/app/sites/{site.site_id}/first-hit").json() == {"received": False, "at": None}


def test_an_editor_defines_a_form_with_its_fields_embed_code_and_hosted_link(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Formsco")
    site = make_site(tenant, [ORIGIN])
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    fields = {
        "field_rows": "3",
        "fields-0-name": "email",
        "fields-0-label": "Your email",
        "fields-0-type": "email",
        "fields-0-required": "on",
        "fields-0-maps_to": "email",
        "fields-1-name": "first_name",
        "fields-1-label": "First name",
        "fields-1-type": "text",
        "fields-2-name": "",
    }
    created = _post(
        staff,
        "/app/forms",
        {
            "name": "Newsletter",
            "site_id": str(site.site_id),
            "min_fill_seconds": "3",
            "success_message": "Welcome aboard",
            "success_redirect": "",
            **fields,
        },
    )
    form_id = _form_id_from(created, "forms")
    api = _api(api_server, tenant)
    form = api.get(f"/api/v1/forms/{form_id}").json()
    assert [(f["name"], f["label"], f["maps_to"], f["required"]) for f in form["fields"]] == [
        ("email", "Your email", "email", True),
        ("first_name", "First name", "first_name", False),
    ]
    assert (form["min_fill_seconds"], form["success_message"]) == (3, "Welcome aboard")
    screen = staff.get(f"/app/forms/{form_id}").text
    assert form["hosted_url"] in screen
    assert str(escape(form["embed_html"])) in screen

    changed = _post(
        staff,
        f"/app/forms/{form_id}",
        {
            "name": "Newsletter",
            "min_fill_seconds": "0",
            "success_message": "",
            "success_redirect": "https://shop.example/thanks",
            **fields,
        },
    )
    assert changed.status_code == 303
    form = api.get(f"/api/v1/forms/{form_id}").json()
    assert (form["min_fill_seconds"], form["success_redirect"]) == (0, "https://shop.example/thanks")
    audited = dict(_actions(tenant))
    assert audited["form.update"] == {"fields": ["min_fill_seconds", "success_message", "success_redirect"]}

    no_email = _post(
        staff,
        f"/app/forms/{form_id}",
        {**fields, "name": "X", "fields-0-maps_to": "first_name", "fields-0-name": "name"},
    )
    assert no_email.status_code == 422


def _contact(tenant: TenantHandle, server: LiveServer, email: str) -> str:
    answer = _api(server, tenant).post("/api/v1/contacts", json={"email": email})
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["id"])


def test_an_editor_makes_tracked_links_one_or_a_whole_send_with_its_csv(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Linksco")
    ann = _contact(tenant, api_server, "ann@linksco.example")
    _contact(tenant, api_server, "bob@linksco.example")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    one = _post(
        staff,
        "/app/links",
        {"recipient": "ann@linksco.example", "target_url": "https://shop.example/a"},
        page="/app/links/new",
    )
    link_id = _form_id_from(one, "links")
    shown = staff.get(f"/app/links/{link_id}").text
    tracked = re.search(r'id="tracked-url">([^<]+)<', shown)
    assert tracked and "/l/" in tracked.group(1)
    assert "&lt;a href=" in shown  # the form that goes into an email
    follow = httpx.get(tracked.group(1), follow_redirects=False)
    assert follow.status_code == 302
    assert follow.headers["location"].startswith("https://shop.example/a")

    pasted = "https://shop.example/1\nhttps://shop.example/2?x=1,2\nbob@linksco.example, https://shop.example/3\n"
    bulk = _post(
        staff, "/app/links/bulk", {"urls": pasted, "recipient": ann, "send_id": "spring"}, page="/app/links/new"
    )
    assert bulk.status_code == 303
    assert bulk.headers["location"] == "/app/links?send_id=spring"
    table = staff.get("/app/links?send_id=spring").text
    assert table.count("/l/") == 3
    exported = staff.get("/app/links/export.csv?send_id=spring")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(row["target_url"] for row in rows) == [
        "https://shop.example/1",
        "https://shop.example/2?x=1,2",
        "https://shop.example/3",
    ]
    assert {row["send_id"] for row in rows} == {"spring"}
    assert all("/l/" in row["tracked_url"] for row in rows)
    assert ("links.bulk_create", {"count": 3}) in _actions(tenant)

    unknown = _post(
        staff, "/app/links/bulk", {"urls": "nobody@linksco.example, https://shop.example/x"}, page="/app/links/new"
    )
    assert unknown.status_code == 422
    assert "nobody@linksco.example" in unknown.text


def _page_with_blocks(staff: httpx.Client, slug: str) -> str:
    created = _post(staff, "/app/pages", {"slug": slug, "title": "Members corner"}, page="/app/pages")
    page_id = _form_id_from(created, "pages")
    blocks = {
        "title": "Members corner",
        "access_level": "anonymous",
        "block_rows": "2",
        "blocks-0-kind": "html",
        "blocks-0-html": "<p>Hello {{contact.first_name|there}}</p>",
        "blocks-0-visible_to": ["anonymous", "identified", "logged_in"],
        "blocks-1-kind": "html",
        "blocks-1-html": "<p>Secret for members</p>",
        "blocks-1-visible_to": ["logged_in"],
    }
    saved = staff.post(f"/app/pages/{page_id}", data={"csrf": csrf_of(staff.get("/app/pages").text), **blocks})
    assert saved.status_code == 303, saved.text
    return page_id


def test_the_page_preview_shows_a_logged_in_block_only_as_logged_in(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Previewco")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page_id = _page_with_blocks(staff, "corner")
    api = _api(api_server, tenant)
    blocks = api.get(f"/api/v1/pages/{page_id}").json()["blocks"]
    assert [b["visible_to"] for b in blocks] == [["anonymous", "identified", "logged_in"], ["logged_in"]]
    previews = {
        level: staff.get(f"/app/pages/{page_id}/preview?level={level}")
        for level in ("anonymous", "identified", "logged_in")
    }
    assert all(p.headers["content-security-policy"] == "sandbox" for p in previews.values())
    assert ["Secret for members" in p.text for p in previews.values()] == [False, False, True]
    assert "Hello there" in previews["anonymous"].text
    assert "Hello Ada" in previews["identified"].text  # the sample contact fills merge fields
    public = httpx.get(f"{api_server.base_url}/s/{tenant.slug}/corner")
    assert "Hello there" in public.text and "Secret for members" not in public.text

    draft = {
        "csrf": csrf_of(staff.get("/app/pages").text),
        "title": "Draft title",
        "access_level": "anonymous",
        "block_rows": "1",
        "blocks-0-kind": "html",
        "blocks-0-html": "<p>Unsaved words</p>",
        "blocks-0-visible_to": ["logged_in"],
    }
    as_anonymous = staff.post(f"/app/pages/{page_id}/preview", data={**draft, "level": "anonymous"})
    as_member = staff.post(f"/app/pages/{page_id}/preview", data={**draft, "level": "logged_in"})
    assert as_member.status_code == 200
    assert "Unsaved words" in as_member.text and "Unsaved words" not in as_anonymous.text
    assert api.get(f"/api/v1/pages/{page_id}").json()["title"] == "Members corner"  # a preview saves nothing


@pytest.mark.usefixtures("pipeline")
def test_an_editor_invites_a_member_sends_the_invitation_again_and_disables_them(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], mailbox: Any
) -> None:
    tenant = make_tenant("Clubco")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    created = _post(
        staff,
        "/app/memberships",
        {"name": "Club", "registration": "invite", "landing_page_slug": ""},
        page="/app/memberships",
    )
    site_id = _form_id_from(created, "memberships")
    api = _api(api_server, tenant)
    changed = _post(
        staff,
        f"/app/memberships/{site_id}",
        {"name": "The Club", "registration": "open", "landing_page_slug": ""},
        page="/app/memberships",
    )
    assert changed.status_code == 303
    site = next(s for s in api.get("/api/v1/membership-sites").json() if s["id"] == site_id)
    assert (site["name"], site["registration"]) == ("The Club", "open")

    invited = _post(
        staff,
        f"/app/memberships/{site_id}/members",
        {"email": "mia@clubco.example", "first_name": "Mia"},
        page="/app/memberships",
    )
    assert invited.status_code == 303
    mailbox.wait_for("mia@clubco.example", "Your access to The Club")
    members = api.get(f"/api/v1/membership-sites/{site_id}/members").json()
    assert [(m["has_password"], m["disabled"]) for m in members] == [(False, False)]
    member_id = members[0]["id"]
    screen = staff.get(f"/app/memberships/{site_id}").text
    assert "mia@clubco.example" in screen and "invited" in screen

    again = _post(staff, f"/app/memberships/{site_id}/members/{member_id}/invitation", {}, page="/app/memberships")
    assert again.status_code == 303
    wait_until(
        lambda: len(mailbox.about("mia@clubco.example", "Your access to The Club")) == 2,
        60,
        "the invitation mailed again",
    )

    disabled = _post(staff, f"/app/memberships/{site_id}/members/{member_id}/disable", {}, page="/app/memberships")
    assert disabled.status_code == 303
    assert api.get(f"/api/v1/membership-sites/{site_id}/members").json()[0]["disabled"] is True
    actions = [action for action, _ in _actions(tenant)]
    assert {"member.invite", "member.reinvite", "member.disable", "membership_site.update"} <= set(actions)


def test_the_members_list_shows_each_members_last_login(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """Staff see who actually uses the membership site, and since when nobody has."""
    from tenants.memberships.service import create_member
    from tenants.security.passwords import hash_password

    tenant = make_tenant("Loginsco")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    club = _form_id_from(_post(staff, "/app/memberships", {"name": "Club"}, page="/app/memberships"), "memberships")
    with tenant_session(tenant.tenant_id) as session:
        for email in ("mia@loginsco.example", "noah@loginsco.example"):
            member = create_member(session, site_id=UUID(club), email=email)
            member.password_hash = hash_password("a long member passphrase")
            session.add(member)

    def last_logins() -> dict[str, str]:
        rows = re.findall(
            r"<td>([^<@]+@loginsco\.example)</td>.*?</td>.*?</td>\s*<td>(.*?)</td>",
            staff.get(f"/app/memberships/{club}").text,
            re.S,
        )
        return {email: re.sub(r"<[^>]+>", "", cell).strip() for email, cell in rows}

    assert last_logins() == {"mia@loginsco.example": "never", "noah@loginsco.example": "never"}
    member_pages = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    login = f"/s/{tenant.slug}/m/{club}/login"
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    answer = member_pages.post(
        login,
        data={
            "csrf": csrf_of(member_pages.get(login).text),
            "email": "mia@loginsco.example",
            "password": "a long member passphrase",
        },
    )
    assert answer.status_code == 303, answer.text
    shown = last_logins()
    assert shown["noah@loginsco.example"] == "never"
    at = datetime.strptime(shown["mia@loginsco.example"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
    assert before <= at <= datetime.now(UTC)
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, api_server.base_url, tenant.slug, tenant.owner_email)
    page.goto(f"{api_server.base_url}/app/memberships/{club}")
    assert page.get_by_role("row", name=re.compile("mia@loginsco.example")).get_by_text("UTC").is_visible()
    check_screen(page, "members-last-login")
    context.close()


def test_a_refused_manage_form_comes_back_with_what_was_typed_and_the_reason_by_the_field(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """An editor who mistypes one origin or one field key corrects that, instead of typing the whole form again."""
    tenant = make_tenant("Typoco")
    site = make_site(tenant, [ORIGIN])
    base = api_server.base_url
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)

    page.goto(f"{base}/app/sites/new")
    page.get_by_label("Name").fill("Blog")
    page.get_by_label("Allowed origins (one per line)").fill("https://blog.example\nnot an origin")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Create site").click()
    assert posted.value.status == 422
    assert page.url == f"{base}/app/sites"
    assert page.get_by_label("Name").input_value() == "Blog"
    origins = page.get_by_label("Allowed origins (one per line)")
    assert origins.input_value() == "https://blog.example\nnot an origin"
    assert origins.get_attribute("aria-invalid") == "true"
    assert "'not an origin' is not a value this field takes" in page.locator("#error-allowed_origins").inner_text()
    assert page.locator("#error-name").count() == 0, "only the field at fault carries a reason"
    check_screen(page, "site-edit-refused")
    origins.fill("https://blog.example")
    page.get_by_role("button", name="Create site").click()
    page.wait_for_url(re.compile(r"/app/sites/[0-9a-f-]{36}$"))

    page.goto(f"{base}/app/forms/new")
    page.get_by_label("Name", exact=True).fill("Webinar")
    page.get_by_label("Key of field 2").fill("email")
    page.get_by_label("Label of field 2").fill("Work email")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Create form").click()
    assert posted.value.status == 422
    assert page.get_by_label("Name", exact=True).input_value() == "Webinar"
    assert page.get_by_label("Label of field 2").input_value() == "Work email"
    assert page.get_by_label("Key of field 2").get_attribute("aria-invalid") == "true"
    assert "unique name" in page.locator("#error-fields-1-name").inner_text()
    check_screen(page, "form-edit-refused")

    saved = httpx.Client(base_url=base, headers=tenant.headers).get(f"/api/v1/sites/{site.site_id}").json()
    staff = login_http(base, tenant.slug, tenant.owner_email)
    refused = _post(
        staff, f"/app/sites/{site.site_id}", {"name": "x" * 201, "allowed_origins": ORIGIN, "bot_policy": "flag"}
    )
    assert refused.status_code == 422
    assert 'id="error-name"' in refused.text and "x" * 201 in refused.text
    assert httpx.Client(base_url=base, headers=tenant.headers).get(f"/api/v1/sites/{site.site_id}").json() == saved
    context.close()


def _refused_post(page: Any, button: str) -> int:
    """Click ``button`` and answer the status of the form's POST (the page shown is its answer)."""
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_load_state()
    return int(posted.value.status)


@pytest.mark.browser
def test_a_refused_tracked_link_or_send_comes_back_with_what_was_typed_and_the_reason_by_the_field(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """A mistyped recipient, in one link or in one line of a pasted send, is corrected in place."""
    tenant = make_tenant("Linktypoco")
    _contact(tenant, api_server, "ann@linktypoco.example")
    base = api_server.base_url
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)

    page.goto(f"{base}/app/links/new")
    page.get_by_label("Recipient (a contact's email or id)").fill("anne@linktypoco.example")
    page.get_by_label("Destination URL", exact=True).fill("https://shop.example/offer")
    page.get_by_label("Send (optional)").fill("autumn")
    assert _refused_post(page, "Create link") == 422
    recipient = page.get_by_label("Recipient (a contact's email or id)")
    assert recipient.input_value() == "anne@linktypoco.example"
    assert recipient.get_attribute("aria-invalid") == "true"
    assert "no contact has the address 'anne@linktypoco.example'" in page.locator("#error-recipient").inner_text()
    assert page.get_by_label("Destination URL", exact=True).input_value() == "https://shop.example/offer"
    assert page.get_by_label("Send (optional)").input_value() == "autumn"
    check_screen(page, "link-refused")
    recipient.fill("ann@linktypoco.example")
    page.get_by_role("button", name="Create link", exact=True).click()
    page.wait_for_url(re.compile(r"/app/links/[0-9a-f-]{36}$"))

    page.goto(f"{base}/app/links/new")
    pasted = "https://shop.example/1\n\nbob@linktypoco.example, https://shop.example/2"
    page.get_by_label("Destination URLs, one per line").fill(pasted)
    page.get_by_label("Recipient of the lines that name none").fill("ann@linktypoco.example")
    page.get_by_label("Send", exact=True).fill("winter")
    assert _refused_post(page, "Create links") == 422
    urls = page.get_by_label("Destination URLs, one per line")
    assert urls.input_value() == pasted
    assert urls.get_attribute("aria-invalid") == "true"
    reason = page.locator("#error-urls").inner_text()
    assert reason.startswith("line 3:") and "bob@linktypoco.example" in reason  # the line as pasted, blanks too
    assert page.get_by_label("Send", exact=True).input_value() == "winter"
    check_screen(page, "links-bulk-refused")
    with tenant_session(tenant.tenant_id) as session:
        assert [item.link.send_id for item in list_links(session)] == ["autumn"]  # the refused send made none
    context.close()


@pytest.mark.browser
def test_a_refused_page_comes_back_with_what_was_typed_and_the_reason_by_the_field(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """A taken address on a new page, or an unsafe link in one block, is corrected without retyping the page."""
    tenant = make_tenant("Pagetypoco")
    base = api_server.base_url
    owner = login_http(base, tenant.slug, tenant.owner_email)
    page_id = _page_with_blocks(owner, "corner")
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)

    page.goto(f"{base}/app/pages")
    page.get_by_label("Address (slug)").fill("corner")
    page.get_by_label("Title").fill("Another corner")
    assert _refused_post(page, "Create page") == 409
    slug = page.get_by_label("Address (slug)")
    assert slug.input_value() == "corner" and slug.get_attribute("aria-invalid") == "true"
    assert "a page with the slug 'corner' exists" in page.locator("#error-slug").inner_text()
    assert page.get_by_label("Title").input_value() == "Another corner"
    check_screen(page, "pages-refused")

    page.goto(f"{base}/app/pages/{page_id}")
    page.get_by_label("Title").fill("Members corner, renewed")
    page.locator('select[name="blocks-2-kind"]').select_option("link")
    page.locator('input[name="blocks-2-url"]').fill("javascript:alert(1)")
    page.locator('input[name="blocks-2-text"]').fill("Click me")
    assert _refused_post(page, "Save page") == 422
    assert page.get_by_label("Title").input_value() == "Members corner, renewed"
    url = page.locator('input[name="blocks-2-url"]')
    assert url.input_value() == "javascript:alert(1)" and url.get_attribute("aria-invalid") == "true"
    assert "'javascript:alert(1)' is not a value this field takes" in page.locator("#error-blocks-2-url").inner_text()
    assert page.locator('input[name="blocks-2-text"]').input_value() == "Click me"
    assert page.locator('textarea[name="blocks-1-html"]').input_value() == "<p>Secret for members</p>"
    check_screen(page, "page-edit-refused")
    saved = _api(api_server, tenant).get(f"/api/v1/pages/{page_id}").json()
    assert (saved["title"], len(saved["blocks"])) == ("Members corner", 2)
    context.close()


@pytest.mark.browser
def test_refused_membership_settings_or_invitation_come_back_with_what_was_typed_and_the_reason_by_the_field(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    """A blank site name, or inviting someone who is already a member, is answered next to that field."""
    tenant = make_tenant("Clubtypoco")
    base = api_server.base_url
    owner = login_http(base, tenant.slug, tenant.owner_email)
    club = _form_id_from(_post(owner, "/app/memberships", {"name": "Club"}, page="/app/memberships"), "memberships")
    invited = _post(owner, f"/app/memberships/{club}/members", {"email": "mia@clubtypoco.example"})
    assert invited.status_code == 303
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)

    page.goto(f"{base}/app/memberships/{club}")
    page.get_by_label("Name", exact=True).fill("   ")
    page.get_by_label("Registration").select_option("open")
    assert _refused_post(page, "Save") == 422
    name = page.locator('input[name="name"]')
    assert name.get_attribute("aria-invalid") == "true"
    assert "is not a value this field takes" in page.locator("#error-name").inner_text()
    assert page.get_by_label("Registration").input_value() == "open"
    check_screen(page, "membership-site-refused")

    page.get_by_label("Email").fill("mia@clubtypoco.example")
    page.get_by_label("First name").fill("Mia")
    assert _refused_post(page, "Send invitation") == 409
    email = page.get_by_label("Email")
    assert email.input_value() == "mia@clubtypoco.example" and email.get_attribute("aria-invalid") == "true"
    assert "already a member" in page.locator("#error-email").inner_text()
    assert page.get_by_label("First name").input_value() == "Mia"
    assert page.get_by_label("Name", exact=True).input_value() == "Club"  # the other form shows what is saved
    check_screen(page, "member-invite-refused")
    api = _api(api_server, tenant)
    site = next(s for s in api.get("/api/v1/membership-sites").json() if s["id"] == club)
    assert (site["name"], site["registration"]) == ("Club", "invite")
    assert len(api.get(f"/api/v1/membership-sites/{club}/members").json()) == 1
    context.close()


def test_a_tampered_row_count_is_refused_and_changes_nothing(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """The hidden row counts of the page and form editors are read, not trusted: text or a huge number is a 422
    page that says why (never a 500, never a loop over a billion empty rows), and the saved page keeps its blocks."""
    tenant = make_tenant("Tamperco")
    site = make_site(tenant, [ORIGIN])
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page_id = _page_with_blocks(staff, "corner")
    for rows in ("abc", "-1", "999999999"):
        saved = _post(staff, f"/app/pages/{page_id}", {"title": "Emptied", "block_rows": rows}, page="/app/pages")
        assert saved.status_code == 422, (rows, saved.text)
        assert "reload it and try again" in saved.text
        preview = _post(staff, f"/app/pages/{page_id}/preview", {"title": "x", "block_rows": rows}, page="/app/pages")
        assert preview.status_code == 422
        form = _post(
            staff,
            "/app/forms",
            {"name": "Newsletter", "site_id": str(site.site_id), "field_rows": rows, "fields-0-name": "email"},
        )
        assert form.status_code == 422
    page = _api(api_server, tenant).get(f"/api/v1/pages/{page_id}").json()
    assert (page["title"], len(page["blocks"])) == ("Members corner", 2)
    assert _api(api_server, tenant).get("/api/v1/forms").json() == []


def test_a_viewer_sees_every_manage_screen_and_changes_nothing(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Viewerco")
    site = make_site(tenant, [ORIGIN])
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page_id = _page_with_blocks(owner, "seen")
    club = _form_id_from(_post(owner, "/app/memberships", {"name": "Club"}, page="/app/memberships"), "memberships")
    add_staff(tenant.tenant_id, "vi@viewerco.example", UserRole.VIEWER)
    viewer = login_http(api_server.base_url, tenant.slug, "vi@viewerco.example")
    for path in (
        "/app/sites",
        f"/app/sites/{site.site_id}",
        "/app/forms",
        "/app/links",
        "/app/pages",
        f"/app/pages/{page_id}",
        "/app/memberships",
        f"/app/memberships/{club}",
    ):
        answer = viewer.get(path)
        assert answer.status_code == 200, path
        assert 'type="submit">Save' not in answer.text and "Create" not in answer.text, path
    before = _actions(tenant)
    changes = {
        f"/app/sites/{site.site_id}": {"name": "Hijacked", "allowed_origins": "https://evil.example"},
        "/app/sites": {"name": "New", "allowed_origins": ORIGIN},
        "/app/forms": {"name": "F", "site_id": str(site.site_id)},
        "/app/links": {"recipient": "x@y.example", "target_url": "https://a.example"},
        "/app/links/bulk": {"urls": "https://a.example"},
        f"/app/pages/{page_id}": {"title": "Hijacked", "block_rows": "0"},
        "/app/pages": {"slug": "new", "title": "New"},
        f"/app/memberships/{club}": {"name": "Hijacked"},
        f"/app/memberships/{club}/members": {"email": "x@y.example"},
    }
    for path, data in changes.items():
        assert _post(viewer, path, data).status_code == 403, path
    api = _api(api_server, tenant)
    assert api.get(f"/api/v1/sites/{site.site_id}").json()["name"] == "Shop"
    assert api.get(f"/api/v1/pages/{page_id}").json()["title"] == "Members corner"
    assert [s["name"] for s in api.get("/api/v1/membership-sites").json()] == ["Club"]
    assert api.get("/api/v1/forms").json() == []
    assert _actions(tenant) == before


def test_a_change_without_the_page_token_is_refused(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Tokenless")
    site = make_site(tenant, [ORIGIN])
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    answer = owner.post(f"/app/sites/{site.site_id}", data={"name": "Changed", "allowed_origins": ORIGIN})
    assert answer.status_code == 403
    assert _api(api_server, tenant).get(f"/api/v1/sites/{site.site_id}").json()["name"] == "Shop"


def test_another_tenants_ids_in_manage_urls_are_not_found(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    theirs = make_tenant("Theirs")
    their_owner = login_http(api_server.base_url, theirs.slug, theirs.owner_email)
    site = make_site(theirs, [ORIGIN])
    page_id = _page_with_blocks(their_owner, "private")
    form_id = _form_id_from(
        _post(
            their_owner,
            "/app/forms",
            {
                "name": "F",
                "site_id": str(site.site_id),
                "field_rows": "1",
                "fields-0-name": "email",
                "fields-0-type": "email",
                "fields-0-required": "on",
            },
        ),
        "forms",
    )
    club = _form_id_from(
        _post(their_owner, "/app/memberships", {"name": "Club"}, page="/app/memberships"), "memberships"
    )
    their_contact = _contact(theirs, api_server, "zed@theirs.example")
    link_id = _form_id_from(
        _post(their_owner, "/app/links", {"recipient": their_contact, "target_url": "https://theirs.example"}), "links"
    )
    ours = make_tenant("Ours")
    owner = login_http(api_server.base_url, ours.slug, ours.owner_email)
    for path in (
        f"/app/sites/{site.site_id}",
        f"/app/sites/{site.site_id}/first-hit",
        f"/app/forms/{form_id}",
        f"/app/pages/{page_id}",
        f"/app/pages/{page_id}/preview?level=logged_in",
        f"/app/links/{link_id}",
        f"/app/memberships/{club}",
    ):
        assert owner.get(path).status_code == 404, path
    changes = {
        f"/app/sites/{site.site_id}": {"name": "Mine", "allowed_origins": ORIGIN},
        f"/app/pages/{page_id}": {"title": "Mine", "block_rows": "0"},
        f"/app/memberships/{club}": {"name": "Mine"},
    }
    for path, data in changes.items():
        assert _post(owner, path, data).status_code == 404, path
    assert UUID(page_id)
    assert _api(api_server, theirs).get(f"/api/v1/sites/{site.site_id}").json()["name"] == "Shop"


@pytest.mark.browser
def test_every_manage_screen_in_a_browser_is_accessible(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    tenant = make_tenant("Screensco")
    site = make_site(tenant, [ORIGIN])
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page_id = _page_with_blocks(owner, "welcome")
    form_id = _form_id_from(
        _post(
            owner,
            "/app/forms",
            {
                "name": "Newsletter",
                "site_id": str(site.site_id),
                "field_rows": "1",
                "fields-0-name": "email",
                "fields-0-type": "email",
                "fields-0-required": "on",
            },
        ),
        "forms",
    )
    club = _form_id_from(_post(owner, "/app/memberships", {"name": "Club"}, page="/app/memberships"), "memberships")
    _contact(tenant, api_server, "ann@screensco.example")
    base = api_server.base_url
    context = browser.new_context()
    page = context.new_page()
    login_browser(page, base, tenant.slug, tenant.owner_email)

    page.goto(f"{base}/app/sites")
    check_screen(page, "sites")
    page.goto(f"{base}/app/sites/{site.site_id}")
    assert page.locator("#site-snippet").inner_text().startswith("<script async src=")
    check_screen(page, "site-edit")
    page.goto(f"{base}/app/forms")
    check_screen(page, "forms")
    page.goto(f"{base}/app/forms/{form_id}")
    check_screen(page, "form-edit")

    page.goto(f"{base}/app/links/new")
    page.get_by_label("Destination URLs, one per line").fill("https://shop.example/a\nhttps://shop.example/b")
    page.get_by_label("Recipient of the lines that name none").fill("ann@screensco.example")
    page.get_by_role("button", name="Create links").click()
    page.wait_for_url(re.compile(r"/app/links\?send_id="))
    assert page.locator("td code").count() == 2
    check_screen(page, "links-bulk")
    page.goto(f"{base}/app/links")
    check_screen(page, "links")

    page.goto(f"{base}/app/pages")
    check_screen(page, "pages")
    page.goto(f"{base}/app/pages/{page_id}")
    frame = page.frame_locator("#preview-frame")
    assert frame.get_by_text("Hello there").is_visible()
    page.get_by_role("radio", name="Logged in").check()
    frame.get_by_text("Secret for members").wait_for()  # the script re-posts the form on a level change
    page.locator('textarea[name="blocks-0-html"]').fill("<p>Hello again {{contact.first_name|there}}</p>")
    frame.get_by_text("Hello again Ada").wait_for()  # unsaved edits previewed as they are typed
    check_screen(page, "page-edit")

    page.goto(f"{base}/app/memberships")
    check_screen(page, "memberships")
    page.goto(f"{base}/app/memberships/{club}")
    check_screen(page, "members")
    context.close()


@pytest.mark.browser
@pytest.mark.usefixtures("pipeline")
def test_the_site_screen_turns_green_when_the_pasted_snippet_sends_its_first_hit(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle], browser: Any
) -> None:
    with tenant_web_server({"/": ("Home", "<h1>Welcome to the shop</h1>")}) as shop:
        tenant = make_tenant("Greenco")
        site = make_site(tenant, [shop.origin])
        context = browser.new_context()
        dashboard = context.new_page()
        login_browser(dashboard, api_server.base_url, tenant.slug, tenant.owner_email)
        dashboard.goto(f"{api_server.base_url}/app/sites/{site.site_id}")
        status = dashboard.locator("#first-hit")
        assert "Waiting for the first hit" in status.inner_text()
        shop.head = dashboard.locator("#site-snippet").inner_text()  # pasted as the tenant would
        visitor = browser.new_context()
        visitor.new_page().goto(shop.url("/"))
        status.and_(dashboard.locator(".received")).wait_for(timeout=60_000)
        assert "The snippet works" in status.inner_text()
        visitor.close()
        context.close()
