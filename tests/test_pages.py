"""Hosted pages and membership sessions over HTTP: who sees which block, logins, sessions, passwords."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.testing import TestClient

from tenants.contacts.service import ContactChanges, update_contact
from tenants.identity.service import link_visitor
from tenants.isolation import tenant_session
from tenants.memberships.service import create_member
from tenants.models import Evidence, utcnow
from tenants.security.passwords import hash_password
from tenants.tracking.visitors import visitor_of_browser
from tests.conftest import Mailbox, TenantHandle

PASSWORD = "correct horse battery staple"
SESSION = "tm_session"  # over http; `__Host-tm_session` on https


@pytest.fixture
def tenant(make_tenant: Callable[..., TenantHandle]) -> TenantHandle:
    return make_tenant("Club")


def api(client: TestClient[Any], tenant: TenantHandle, method: str, path: str, **json: Any) -> Any:
    response = client.request(method, path, json=json or None, headers=tenant.headers)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def setup_site(client: TestClient[Any], tenant: TenantHandle) -> dict[str, Any]:
    """A membership site, a sensitive custom field, and a page with three blocks."""
    site = api(client, tenant, "POST", "/api/v1/membership-sites", name="Club", registration="open")
    api(client, tenant, "POST", "/api/v1/contact-fields", key="plan", label="Plan", type="text", sensitive=True)
    blocks = [
        {"id": "a", "kind": "html", "html": "<p>Block A for strangers</p>", "visible_to": ["anonymous"]},
        {
            "id": "b",
            "kind": "html",
            "html": "<p>Block B: hello {{contact.first_name|there}} [{{contact.email|hidden}}]</p>",
            "visible_to": ["identified", "logged_in"],
        },
        {
            "id": "c",
            "kind": "html",
            "html": "<p>Block C: {{contact.email}} on {{contact.custom.plan|no plan}}</p>",
            "visible_to": ["logged_in"],
        },
    ]
    page = api(
        client, tenant, "POST", "/api/v1/pages", slug="home", title="Welcome {{contact.first_name|}}", blocks=blocks
    )
    members_only = api(
        client,
        tenant,
        "POST",
        "/api/v1/pages",
        slug="members",
        title="Members",
        access_level="logged_in",
        membership_site_id=site["id"],
        blocks=[{"kind": "html", "html": "<p>Secret area</p>"}],
    )
    return {"site": site, "page": page, "members_only": members_only}


def add_member(tenant: TenantHandle, site_id: str, email: str, first_name: str, plan: str = "gold") -> str:
    with tenant_session(tenant.tenant_id) as session:
        member = create_member(session, site_id=site_id, email=email, first_name=first_name)  # type: ignore[arg-type]
        member.password_hash = hash_password(PASSWORD)
        member.password_changed_at = utcnow()
        session.add(member)
        session.flush()
        update_contact(session, member.contact_id, ContactChanges(custom={"plan": plan}))
        return str(member.contact_id)


def blocks_shown(html: str) -> list[str]:
    return re.findall(r'data-block="(\w+)"', html)


def csrf(client: TestClient[Any], path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r"name='csrf' value='([^']+)'", page.text)
    assert match is not None
    return match.group(1)


def log_in(
    client: TestClient[Any],
    tenant: TenantHandle,
    site_id: str,
    email: str,
    password: str = PASSWORD,
    *,
    next_path: str = "",
) -> Any:
    base = f"/s/{tenant.slug}/m/{site_id}/login"
    token = csrf(client, base + (f"?next={next_path}" if next_path else ""))
    data = {"csrf": token, "email": email, "password": password, **({"next": next_path} if next_path else {})}
    return client.post(base, data=data, follow_redirects=False)


def test_each_level_sees_its_blocks_and_personal_data_needs_a_login(
    client: TestClient[Any], tenant: TenantHandle
) -> None:
    parts = setup_site(client, tenant)
    contact_id = add_member(tenant, parts["site"]["id"], "monica@example.com", "Monica")
    home = f"/s/{tenant.slug}/home"

    anonymous = client.get(home)
    assert anonymous.status_code == 200
    assert blocks_shown(anonymous.text) == ["a"]
    assert "tm_vid=" in anonymous.headers["set-cookie"] and "HttpOnly" in anonymous.headers["set-cookie"]
    assert "/t/" in anonymous.text  # the tracker is included

    # Identified (as a form or an email click would leave it): B with the first name, never the email.
    with tenant_session(tenant.tenant_id) as session:
        browser = visitor_of_browser(tenant.tenant_id, client.cookies.get("tm_vid"), first_hit=(tenant.tenant_id, 0))
        link_visitor(session, visitor_id=browser.visitor_id, contact_id=contact_id, evidence=Evidence.EMAIL_CLICK)  # type: ignore[arg-type]
    identified = client.get(home)
    assert blocks_shown(identified.text) == ["b"]
    assert "hello Monica [hidden]" in identified.text
    assert "monica@example.com" not in identified.text and "gold" not in identified.text
    assert "<title>Welcome Monica</title>" in identified.text

    # Logged in: C with the email and the sensitive custom field.
    assert log_in(client, tenant, parts["site"]["id"], "monica@example.com").status_code == 303
    logged_in = client.get(home)
    assert blocks_shown(logged_in.text) == ["b", "c"]
    assert "Block C: monica@example.com on gold" in logged_in.text
    assert "hello Monica [monica@example.com]" in logged_in.text


def test_merge_fields_are_escaped_never_executed(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "evil@example.com", "<script>alert(1)</script>{{contact.email}}")
    log_in(client, tenant, parts["site"]["id"], "evil@example.com")
    page = client.get(f"/s/{tenant.slug}/home").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{contact.email}}" in page  # the value is text, not a template


def test_unsafe_html_and_urls_are_refused_or_cleaned(client: TestClient[Any], tenant: TenantHandle) -> None:
    for block in (
        {"kind": "link", "url": "javascript:alert(1)", "text": "x"},
        {"kind": "link", "url": "data:text/html,<script>x</script>", "text": "x"},
        {"kind": "html", "html": '<a href="javascript:alert(1)">x</a>'},
        {"kind": "html", "html": "<img src='data:image/png;base64,AAAA'>"},
    ):
        response = client.post(
            "/api/v1/pages", json={"slug": "bad", "title": "Bad", "blocks": [block]}, headers=tenant.headers
        )
        assert response.status_code == 422, block
    cleaned = api(
        client,
        tenant,
        "POST",
        "/api/v1/pages",
        slug="clean",
        title="Clean",
        blocks=[
            {"kind": "html", "html": "<p onclick='x()'>hi</p><script>steal()</script><iframe src='https://x'></iframe>"}
        ],
    )
    assert cleaned["blocks"][0]["html"] == "<p>hi</p>"


def test_members_only_page_sends_strangers_to_login_and_back(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "back@example.com", "Back")
    page = f"/s/{tenant.slug}/members"
    response = client.get(page, follow_redirects=False)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == f"/s/{tenant.slug}/m/{parts['site']['id']}/login"
    next_path = parse_qs(location.query)["next"][0]
    assert next_path == page
    login = log_in(client, tenant, parts["site"]["id"], "back@example.com", next_path=next_path)
    assert login.status_code == 303 and login.headers["location"] == page
    assert "Secret area" in client.get(page).text
    # `next` cannot send anyone elsewhere.
    elsewhere = log_in(client, tenant, parts["site"]["id"], "back@example.com", next_path="https://evil.example/")
    account = f"/s/{tenant.slug}/m/{parts['site']['id']}/account"
    assert elsewhere.headers["location"] == account  # without a page to return to: the member's account page
    assert "Logged in as Back" in client.get(account).text


def test_a_planted_session_id_does_not_survive_login(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "fix@example.com", "Fix")
    client.cookies.set(SESSION, "attacker-chosen-session-id-0123456789")
    response = log_in(client, tenant, parts["site"]["id"], "fix@example.com")
    issued = response.cookies.get(SESSION)
    assert issued and issued != "attacker-chosen-session-id-0123456789"
    attacker = TestClient(app=client.app)
    attacker.cookies.set(SESSION, "attacker-chosen-session-id-0123456789")
    with attacker:
        assert blocks_shown(attacker.get(f"/s/{tenant.slug}/home").text) == ["a"]


def test_logout_ends_the_session(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "bye@example.com", "Bye")
    log_in(client, tenant, parts["site"]["id"], "bye@example.com")
    old_session = client.cookies.get(SESSION)
    base = f"/s/{tenant.slug}/m/{parts['site']['id']}"
    token = csrf(client, f"{base}/login")
    assert client.post(f"{base}/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    replay = TestClient(app=client.app)
    replay.cookies.set(SESSION, old_session or "")
    with replay:
        assert replay.get(f"/s/{tenant.slug}/members", follow_redirects=False).status_code == 303


def test_a_password_change_ends_every_other_session(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "two@example.com", "Two")
    members = f"/s/{tenant.slug}/members"
    with TestClient(app=client.app) as laptop, TestClient(app=client.app) as phone:
        log_in(laptop, tenant, parts["site"]["id"], "two@example.com")
        log_in(phone, tenant, parts["site"]["id"], "two@example.com")
        assert phone.get(members).status_code == 200
        base = f"/s/{tenant.slug}/m/{parts['site']['id']}"
        token = csrf(laptop, f"{base}/password")
        before = laptop.cookies.get(SESSION)
        changed = laptop.post(
            f"{base}/password",
            data={"csrf": token, "current_password": PASSWORD, "new_password": "a brand new passphrase"},
            follow_redirects=False,
        )
        assert changed.status_code == 303, changed.text
        assert laptop.cookies.get(SESSION) != before  # a new id for the session that changed it
        assert laptop.get(members, follow_redirects=False).status_code == 200
        assert phone.get(members, follow_redirects=False).status_code == 303
        assert log_in(phone, tenant, parts["site"]["id"], "two@example.com").status_code == 401
        assert (
            log_in(phone, tenant, parts["site"]["id"], "two@example.com", "a brand new passphrase").status_code == 303
        )


def test_wrong_passwords_are_throttled(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "guess@example.com", "Guess")
    statuses = [
        log_in(client, tenant, parts["site"]["id"], "guess@example.com", "wrong password!").status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    limited = log_in(client, tenant, parts["site"]["id"], "guess@example.com")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    # Another member is not locked out by someone guessing at Guess's account.
    add_member(tenant, parts["site"]["id"], "other@example.com", "Other")
    assert log_in(client, tenant, parts["site"]["id"], "other@example.com").status_code == 303


def test_forms_without_a_csrf_token_are_refused(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    add_member(tenant, parts["site"]["id"], "csrf@example.com", "C")
    base = f"/s/{tenant.slug}/m/{parts['site']['id']}/login"
    response = client.post(base, data={"email": "csrf@example.com", "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 403
    foreign = client.post(
        base,
        data={"csrf": csrf(client, base), "email": "csrf@example.com", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403


@pytest.mark.usefixtures("pipeline")
def test_invitation_and_password_reset_by_mail(client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox) -> None:
    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    api(
        client, tenant, "POST", f"/api/v1/membership-sites/{site_id}/members", email="new@example.com", first_name="New"
    )
    invitation = mailbox.wait_for("new@example.com", "Your access")
    link = re.search(r"https?://\S+/password/set\?token=\S+", invitation.get_payload(decode=True).decode())
    assert link is not None
    path = urlsplit(link.group(0))
    set_path = f"{path.path}?{path.query}"
    form = client.get(set_path).text
    token = re.search(r"name='token' value='([^']+)'", form).group(1)  # type: ignore[union-attr]
    chosen = {"csrf": csrf(client, set_path), "token": token, "new_password": "my first password"}
    assert client.post(path.path, data=chosen, follow_redirects=False).status_code == 303
    assert client.post(path.path, data=chosen, follow_redirects=False).status_code == 422  # single use
    assert log_in(client, tenant, site_id, "new@example.com", "my first password").status_code == 303

    reset_path = f"/s/{tenant.slug}/m/{site_id}/password/reset"
    client.post(reset_path, data={"csrf": csrf(client, reset_path), "email": "new@example.com"})
    client.post(reset_path, data={"csrf": csrf(client, reset_path), "email": "nobody@example.com"})  # same answer
    reset = mailbox.wait_for("new@example.com", "Reset your password")
    reset_link = urlsplit(re.search(r"https?://\S+", reset.get_payload(decode=True).decode()).group(0))  # type: ignore[union-attr]
    reset_token = parse_qs(reset_link.query)["token"][0]
    data = {"csrf": csrf(client, reset_path), "token": reset_token, "new_password": "after the reset"}
    assert client.post(reset_link.path, data=data, follow_redirects=False).status_code == 303
    assert log_in(client, tenant, site_id, "new@example.com", "my first password").status_code == 401
    assert log_in(client, tenant, site_id, "new@example.com", "after the reset").status_code == 303
    assert not any("nobody@example.com" in m["To"] for m in mailbox.messages)


def test_open_registration_logs_the_new_member_in(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    base = f"/s/{tenant.slug}/m/{parts['site']['id']}/register"
    data = {
        "csrf": csrf(client, base),
        "email": "joiner@example.com",
        "password": "a long new password",
        "first_name": "Jo",
    }
    assert client.post(base, data=data, follow_redirects=False).status_code == 303
    assert blocks_shown(client.get(f"/s/{tenant.slug}/home").text) == ["b", "c"]


def test_preview_shows_the_page_as_each_level(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    contact_id = add_member(tenant, parts["site"]["id"], "preview@example.com", "Pre")
    page_id = parts["page"]["id"]
    for level, expected in (("anonymous", ["a"]), ("identified", ["b"]), ("logged_in", ["b", "c"])):
        response = client.get(
            f"/api/v1/pages/{page_id}/preview",
            params={"level": level, "contact_id": contact_id},
            headers=tenant.headers,
        )
        assert response.status_code == 200
        assert blocks_shown(response.text) == expected, level
    assert (
        "preview@example.com"
        not in client.get(
            f"/api/v1/pages/{page_id}/preview",
            params={"level": "identified", "contact_id": contact_id},
            headers=tenant.headers,
        ).text
    )


def test_unknown_pages_and_tenants_are_404(client: TestClient[Any], tenant: TenantHandle) -> None:
    assert client.get(f"/s/{tenant.slug}/nope").status_code == 404
    assert client.get("/s/no-such-tenant/home").status_code == 404
    assert client.get("/some-page", headers={"Host": "unknown.example"}).status_code == 404
