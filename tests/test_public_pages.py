"""Members and visitors get real pages: the membership screens pass an accessibility check, and every refused form
(a wrong password, a missing page token, a throttle, text that cannot be stored) answers a page that says why."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from uuid import UUID

import httpx
from playwright.sync_api import Browser

from tenants.isolation import tenant_session
from tenants.memberships.service import create_member
from tenants.models import utcnow
from tenants.security.passwords import hash_password
from tests.conftest import LiveServer, TenantHandle, make_site
from tests.support.dashboard import check_screen, csrf_of

PASSWORD = "a long member passphrase"


def membership_site(api_server: LiveServer, tenant: TenantHandle, registration: str = "open") -> str:
    """A membership site of ``tenant`` (open registration unless told) with one member, mia@example.com; its base
    path."""
    answer = httpx.post(
        f"{api_server.base_url}/api/v1/membership-sites",
        json={"name": "Club", "registration": registration},
        headers=tenant.headers,
    )
    assert answer.status_code == 201, answer.text
    site_id = answer.json()["id"]
    with tenant_session(tenant.tenant_id) as session:
        member = create_member(session, site_id=UUID(site_id), email="mia@example.com", first_name="Mia")
        member.password_hash = hash_password(PASSWORD)
        member.password_changed_at = utcnow()
        session.add(member)
    return f"/s/{tenant.slug}/m/{site_id}"


def html_page(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


def test_the_membership_login_registration_and_account_pages_are_accessible(
    browser: Browser, api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    base = api_server.base_url + membership_site(api_server, make_tenant("Axeclub"))
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/register")
    assert page.get_by_label("Email").is_visible()
    check_screen(page, "membership-register")
    page.goto(f"{base}/login")
    check_screen(page, "membership-login")
    page.get_by_label("Password").fill("not the password")
    page.get_by_label("Email").fill("mia@example.com")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "the email or password is not right"
    check_screen(page, "membership-login-refused")
    page.get_by_label("Email").fill("mia@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/account$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Logged in as Mia"
    check_screen(page, "membership-account")
    page.get_by_role("button", name="Log out", exact=True).click()
    page.wait_for_url(re.compile(r"/login$"))
    context.close()


def test_an_invite_only_site_offers_no_registration_on_its_login_page(
    browser: Browser, api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """A member of an invite-only site is never sent to a registration that would only refuse them."""
    tenant = make_tenant("Inviteclub")
    invite_only = api_server.base_url + membership_site(api_server, tenant, "invite")
    open_site = api_server.base_url + membership_site(api_server, tenant, "open")
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{invite_only}/login")
    assert page.get_by_role("link", name="Forgot your password?").is_visible()
    assert page.get_by_role("link", name="Register").count() == 0
    check_screen(page, "membership-login-invite-only")
    page.get_by_label("Email").fill("mia@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "the email or password is not right"
    assert page.get_by_role("link", name="Register").count() == 0, "nor on the refused login shown again"
    page.goto(f"{open_site}/login")
    assert page.get_by_role("link", name="Register").is_visible()
    context.close()


def test_a_refused_registration_link_offers_register_only_where_anyone_may_register(
    browser: Browser, api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """A dead link (mistyped, expired, or its site closed since the mail) on an invite-only site never sends the
    person to a registration that would only refuse them; the login page decides the same way."""
    tenant = make_tenant("Deadlinkclub")
    invite_only = api_server.base_url + membership_site(api_server, tenant, "invite")
    open_site = api_server.base_url + membership_site(api_server, tenant, "open")
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(f"{invite_only}/register/confirm?token=not-a-token")
    assert answer is not None and answer.status == 422
    assert page.get_by_role("alert").inner_text() == "this link is not valid or has expired"
    assert page.get_by_role("link", name="Log in").is_visible()
    assert page.get_by_role("link", name="Register").count() == 0
    check_screen(page, "membership-link-refused-invite-only")
    answer = page.goto(f"{open_site}/register/confirm?token=not-a-token")
    assert answer is not None and answer.status == 422
    assert page.get_by_role("link", name="Register").is_visible()
    context.close()


def test_a_refused_membership_form_is_a_page_with_its_status(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    base = membership_site(api_server, make_tenant("Refusals"))
    client = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    token = csrf_of(client.get(f"{base}/login").text)

    no_token = client.post(f"{base}/login", data={"email": "mia@example.com", "password": PASSWORD})
    assert "the form expired" in html_page(no_token, 403)

    wrong = client.post(f"{base}/login", data={"csrf": token, "email": "mia@example.com", "password": "nope nope"})
    shown_again = html_page(wrong, 401)
    assert "the email or password is not right" in shown_again
    assert 'name="password"' in shown_again  # the form itself, to try again
    assert client.get(f"{base}/account").status_code == 303  # nobody was logged in

    short = client.post(f"{base}/password/set", data={"csrf": token, "token": "x", "new_password": "short"})
    assert 'name="new_password"' in html_page(short, short.status_code)
    assert short.status_code in (400, 422)

    throttled = [
        client.post(f"{base}/login", data={"csrf": token, "email": "mia@example.com", "password": f"wrong {n}"})
        for n in range(6)
    ]
    assert throttled[-1].status_code == 429
    assert throttled[-1].headers["retry-after"].isdigit()
    assert throttled[-1].headers["content-type"].startswith("text/html")

    unknown = client.get(f"/s/no-such-tenant/m/{UUID(int=1)}/register/confirm?token=x")
    html_page(unknown, 404)


def test_another_tenants_membership_site_is_not_found_under_this_tenant(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    ours, theirs = make_tenant("Oursite"), make_tenant("Theirsite")
    membership_site(api_server, ours)
    their_site_id = membership_site(api_server, theirs).rsplit("/", 1)[1]
    base = f"/s/{ours.slug}/m/{their_site_id}"
    client = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    html_page(client.get(f"{base}/login"), 404)
    token = csrf_of(client.get(f"{membership_site(api_server, ours)}/login").text)
    answer = client.post(f"{base}/register", data={"csrf": token, "email": "x@example.com"})
    html_page(answer, 404)
    login = client.post(f"{base}/login", data={"csrf": token, "email": "mia@example.com", "password": PASSWORD})
    assert login.status_code in (401, 404) and "session" not in login.headers.get("set-cookie", "")


def test_a_nul_in_a_membership_or_hosted_form_answers_a_page_naming_the_field(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Nulpage")
    base = membership_site(api_server, tenant)
    client = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    token = csrf_of(client.get(f"{base}/register").text)
    answer = client.post(f"{base}/register", data={"csrf": token, "email": "n@example.com", "first_name": "N\x00o"})
    assert "The field first_name holds" in html_page(answer, 400)

    site = make_site(tenant, [api_server.base_url])
    form = httpx.post(
        f"{api_server.base_url}/api/v1/forms",
        json={"site_id": str(site.site_id), "name": "News", "fields": [{"name": "email"}], "min_fill_seconds": 0},
        headers=tenant.headers,
    ).json()
    hosted = client.get(f"/f/{form['form_key']}")
    assert "<h1>News</h1>" in html_page(hosted, 200)
    posted = client.post(f"/f/{form['form_key']}", data={"email": "a\x00@example.com"})
    assert "The field email holds" in html_page(posted, 400)


def test_a_hosted_form_shows_its_refusal_next_to_the_field_and_unknown_pages_are_pages(
    api_server: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Formpage")
    site = make_site(tenant, [api_server.base_url])
    fields = [{"name": "email"}, {"name": "first_name", "required": True}]
    form = httpx.post(
        f"{api_server.base_url}/api/v1/forms",
        json={"site_id": str(site.site_id), "name": "News", "fields": fields, "min_fill_seconds": 0},
        headers=tenant.headers,
    ).json()
    assert 'data-trailmark-form="' in form["embed_html"] and "Date.now()" in form["embed_html"]
    client = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    refused = client.post(
        f"/f/{form['form_key']}",
        data={"email": "<b>not an email</b>", "tm_started": str(int(time.time() * 1000) - 10_000)},
        headers={"Origin": api_server.base_url},
    )
    page = html_page(refused, 422)
    assert 'class="tm-error"' in page
    assert "&lt;b&gt;not an email&lt;/b&gt;" in page  # what was typed comes back, escaped
    assert "This form does not exist." in html_page(client.get("/f/no-such-form"), 404)
    assert "This link is not valid." in html_page(client.get("/l/no-such-link"), 404)
    assert "This page does not exist." in html_page(client.get(f"/s/{tenant.slug}/nothing-here"), 404)
