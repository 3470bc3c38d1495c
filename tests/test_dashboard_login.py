"""Staff reach the dashboard only through its login, and every change carries the page's CSRF token."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.dashboard import check_screen, csrf_of, login_browser, login_http


def test_the_dashboard_sends_a_stranger_to_the_login_page_and_back(api_server: Any) -> None:
    answer = httpx.get(f"{api_server.base_url}/app?site=ann", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/app/login?next=/app%3Fsite%3Dann"


def test_the_owner_logs_in_with_workspace_email_and_password(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Loginco")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    home = staff.get("/app")
    assert home.status_code == 200
    assert tenant.owner_email in home.text
    assert home.headers["cache-control"] == "no-store"


def test_a_wrong_password_or_workspace_is_refused_with_the_same_words(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Wrongpw")
    client = httpx.Client(base_url=api_server.base_url)
    token = csrf_of(client.get("/app/login").text)
    answers = [
        client.post("/app/login", data={"csrf": token, "workspace": ws, "email": tenant.owner_email, "password": pw})
        for ws, pw in ((tenant.slug, "not the password"), ("no-such-workspace", "correct horse battery"))
    ]
    assert [a.status_code for a in answers] == [401, 401]
    assert all("the workspace, email or password is wrong" in a.text for a in answers)
    assert client.get("/app", follow_redirects=False).status_code == 303


def test_a_login_without_the_page_token_or_from_another_site_is_refused(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Csrfco")
    form = {"workspace": tenant.slug, "email": tenant.owner_email, "password": "correct horse battery"}
    no_token = httpx.post(f"{api_server.base_url}/app/login", data=form)
    assert no_token.status_code == 403
    assert "the form expired" in no_token.text
    client = httpx.Client(base_url=api_server.base_url)
    token = csrf_of(client.get("/app/login").text)
    elsewhere = client.post("/app/login", data={**form, "csrf": token}, headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403


def test_a_session_id_planted_before_login_never_becomes_valid(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Fixation")
    client = httpx.Client(base_url=api_server.base_url, cookies={"tm_staff": "planted-by-an-attacker-0123456789"})
    token = csrf_of(client.get("/app/login").text)
    login = client.post(
        "/app/login",
        data={
            "csrf": token,
            "workspace": tenant.slug,
            "email": tenant.owner_email,
            "password": "correct horse battery",
        },
    )
    issued = login.cookies["tm_staff"]
    assert issued and issued != "planted-by-an-attacker-0123456789"
    planted = httpx.get(
        f"{api_server.base_url}/app", cookies={"tm_staff": "planted-by-an-attacker-0123456789"}, follow_redirects=False
    )
    assert planted.status_code == 303


def test_logging_out_ends_the_session(api_server: Any, make_tenant: Any) -> None:
    tenant = make_tenant("Logoutco")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    session_id = staff.cookies["tm_staff"]
    token = csrf_of(staff.get("/app").text)
    assert staff.post("/app/logout", data={"csrf": token}).status_code == 303
    stale = httpx.get(f"{api_server.base_url}/app", cookies={"tm_staff": session_id}, follow_redirects=False)
    assert stale.status_code == 303


def test_the_login_page_in_a_browser_is_accessible(api_server: Any, make_tenant: Any, browser: Any) -> None:
    tenant = make_tenant("Browserlogin")
    page = browser.new_page()
    page.goto(f"{api_server.base_url}/app/login")
    check_screen(page, "login")
    login_browser(page, api_server.base_url, tenant.slug, tenant.owner_email)
    assert page.get_by_role("heading", name="Overview").is_visible()
    check_screen(page, "after-login")
    page.close()
