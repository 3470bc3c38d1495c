"""Hosted pages and membership sessions over HTTP: who sees which block, logins, sessions, passwords."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from tenants.contacts.service import ContactChanges, update_contact
from tenants.identity.service import link_visitor
from tenants.isolation import tenant_session
from tenants.memberships.service import create_member
from tenants.models import Evidence, utcnow
from tenants.security.passwords import hash_password
from tenants.tracking.visitors import visitor_of_browser
from tests.conftest import Mailbox, TenantHandle, start_api_server

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
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
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
    token = re.search(r'name="token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
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


# --- open registration: the address is proved by mail before anything exists ---------------------

BOB = "bob@example.com"
BOBS_PHONE = "+15550100123"
CHECK_YOUR_EMAIL = "Check your email"
CONFIRM = "Confirm your email"
ALREADY = "You already have an account"


def add_contact(client: TestClient[Any], tenant: TenantHandle, email: str, first_name: str) -> dict[str, Any]:
    """A contact the tenant knows (not a member): a phone and a sensitive plan on file."""
    return dict(
        api(
            client,
            tenant,
            "POST",
            "/api/v1/contacts",
            email=email,
            first_name=first_name,
            phone=BOBS_PHONE,
            custom={"plan": "platinum"},
        )
    )


def register(
    client: TestClient[Any],
    tenant: TenantHandle,
    site_id: str,
    email: str,
    *,
    first_name: str = "",
    next_path: str = "",
) -> Any:
    """Send the register form as a browser would (with a password too, as the form once asked)."""
    base = f"/s/{tenant.slug}/m/{site_id}/register"
    data = {"csrf": csrf(client, base), "email": email, "first_name": first_name, "password": "chosen by a stranger"}
    return client.post(base, data={**data, **({"next": next_path} if next_path else {})}, follow_redirects=False)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def confirm(client: TestClient[Any], link: str, password: str = PASSWORD) -> Any:
    """Open the emailed link and choose the password on its page."""
    page = client.get(path_of(link))
    assert page.status_code == 200, page.text
    token = parse_qs(urlsplit(link).query)["token"][0]
    data = {"csrf": csrf(client, path_of(link)), "token": token, "password": password}
    return client.post(urlsplit(link).path, data=data, follow_redirects=False)


def resolve(client: TestClient[Any], tenant: TenantHandle) -> dict[str, Any]:
    token = client.cookies.get("tm_vid")
    assert token, "the browser holds no visitor cookie"
    return dict(client.get("/api/v1/resolve", params={"visitor_token": token}, headers=tenant.headers).json())


def rows(tenant: TenantHandle) -> tuple[Any, ...]:
    """Everything registration could touch: contacts (with their names), members, visitors, identity events."""
    with tenant_session(tenant.tenant_id) as session:
        return tuple(
            session.execute(text(query)).all()
            for query in (
                "SELECT id, email, first_name, phone, custom, updated_at FROM contacts ORDER BY id",
                "SELECT id, contact_id, password_hash FROM members ORDER BY id",
                "SELECT id, contact_id, logged_in_until FROM visitors ORDER BY id",
                "SELECT id FROM identity_events ORDER BY id",
            )
        )


@pytest.mark.usefixtures("pipeline")
def test_a_stranger_registering_with_a_contacts_email_gets_nothing_of_theirs(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    """Typing Bob's address on the register form neither logs the stranger in nor identifies his
    device as Bob, shows none of Bob's data, and does not even change Bob's first name."""
    parts = setup_site(client, tenant)
    add_contact(client, tenant, BOB, "Bob")
    home = f"/s/{tenant.slug}/home"
    assert blocks_shown(client.get(home).text) == ["a"]
    before = rows(tenant)

    answer = register(client, tenant, parts["site"]["id"], BOB, first_name="Mallory", next_path=home)
    assert answer.status_code == 200, answer.text
    assert CHECK_YOUR_EMAIL in answer.text
    assert SESSION not in answer.cookies and "tm_vid" not in answer.cookies
    for text_of_bob in (BOB, BOBS_PHONE, "platinum", "Bob"):
        assert text_of_bob not in answer.text
    assert rows(tenant) == before  # no contact, member, visitor or identity event written or changed

    page = client.get(home).text
    assert blocks_shown(page) == ["a"]
    assert BOB not in page and BOBS_PHONE not in page and "platinum" not in page
    assert resolve(client, tenant)["level"] == "anonymous"
    account = client.get(f"/s/{tenant.slug}/m/{parts['site']['id']}/account", follow_redirects=False)
    assert account.status_code == 303  # not logged in: sent to the login page
    # The link went to Bob, not to the stranger's browser.
    assert mailbox.links(BOB, CONFIRM, f"/m/{parts['site']['id']}/register/confirm")


@pytest.mark.usefixtures("pipeline")
def test_the_owner_of_the_address_registers_from_the_mail_and_is_logged_in(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    members = f"/s/{tenant.slug}/members"
    client.get(members)  # the members' page sends the newcomer to log in; they register instead
    visitor_before = client.cookies.get("tm_vid")
    assert (
        register(client, tenant, site_id, "joiner@example.com", first_name="Jo", next_path=members).status_code == 200
    )
    assert rows(tenant)[1] == []  # no member yet

    link = mailbox.links("joiner@example.com", CONFIRM, f"/m/{site_id}/register/confirm")[0]
    page = client.get(path_of(link))
    assert page.status_code == 200 and "joiner@example.com" in page.text
    assert "password" in page.text
    done = confirm(client, link, "my chosen password")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == members  # back to the page that asked
    assert "Secret area" in client.get(members).text
    assert blocks_shown(client.get(f"/s/{tenant.slug}/home").text) == ["b", "c"]
    assert "hello Jo [joiner@example.com]" in client.get(f"/s/{tenant.slug}/home").text
    resolved = resolve(client, tenant)
    assert (resolved["level"], resolved["evidence"]) == ("identified", "login")
    assert client.cookies.get("tm_vid") == visitor_before  # the same device, now known by its login
    with TestClient(app=client.app) as laptop:
        assert log_in(laptop, tenant, site_id, "joiner@example.com", "my chosen password").status_code == 303


@pytest.mark.usefixtures("pipeline")
def test_a_strangers_earlier_registration_does_not_lock_the_owner_out(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    """Both links (the stranger's went to Bob too) work until one is used; then every link is refused,
    and the name the stranger typed never replaces Bob's."""
    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    bob = add_contact(client, tenant, BOB, "Bob")
    with TestClient(app=client.app) as stranger:
        assert register(stranger, tenant, site_id, BOB, first_name="Mallory").status_code == 200
    assert register(client, tenant, site_id, BOB, first_name="Bob").status_code == 200
    # Both mails reach Bob (in either order): whichever he follows works, and then neither does.
    used_link, other_link = mailbox.links(BOB, CONFIRM, f"/m/{site_id}/register/confirm", count=2)
    assert used_link != other_link
    assert client.get(path_of(used_link)).status_code == 200
    assert client.get(path_of(other_link)).status_code == 200

    assert confirm(client, used_link).status_code == 303
    assert blocks_shown(client.get(f"/s/{tenant.slug}/home").text) == ["b", "c"]
    assert "hello Bob [bob@example.com]" in client.get(f"/s/{tenant.slug}/home").text
    used = client.get(path_of(other_link))
    assert used.status_code == 422 and "already used" in used.text
    members = api(client, tenant, "GET", f"/api/v1/membership-sites/{site_id}/members")
    assert [(m["contact_id"], m["has_password"]) for m in members] == [(bob["id"], True)]
    assert api(client, tenant, "GET", f"/api/v1/contacts/{bob['id']}")["first_name"] == "Bob"


@pytest.mark.usefixtures("pipeline")
def test_the_stranger_typed_link_also_works_for_the_owner_and_fills_only_a_blank_name(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    with TestClient(app=client.app) as stranger:
        assert register(stranger, tenant, site_id, "carol@example.com", first_name="Carol").status_code == 200
    link = mailbox.links("carol@example.com", CONFIRM, f"/m/{site_id}/register/confirm")[0]
    assert confirm(client, link).status_code == 303
    assert "hello Carol [carol@example.com]" in client.get(f"/s/{tenant.slug}/home").text


@pytest.mark.usefixtures("pipeline")
def test_a_registration_link_is_single_use_and_expires(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    from tenants.redis_store import get_redis
    from tests.conftest import wait_until

    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    register(client, tenant, site_id, "once@example.com")
    link = mailbox.links("once@example.com", CONFIRM, f"/m/{site_id}/register/confirm")[0]
    assert confirm(client, link, "the first password").status_code == 303

    with TestClient(app=client.app) as replay:
        page = replay.get(path_of(link))
        assert page.status_code == 422 and "already used" in page.text
        token = parse_qs(urlsplit(link).query)["token"][0]
        data = {
            "csrf": csrf(replay, f"/s/{tenant.slug}/m/{site_id}/login"),
            "token": token,
            "password": "a takeover try",
        }
        again = replay.post(urlsplit(link).path, data=data, follow_redirects=False)
        assert again.status_code == 422 and "already used" in again.text
        assert SESSION not in again.cookies
        assert log_in(replay, tenant, site_id, "once@example.com", "a takeover try").status_code == 401
        assert log_in(replay, tenant, site_id, "once@example.com", "the first password").status_code == 303

    # A day passes: the registration behind an unused link is gone (Redis expires it with the link).
    register(client, tenant, site_id, "late@example.com")
    late_link = mailbox.links("late@example.com", CONFIRM, f"/m/{site_id}/register/confirm")[0]
    client_redis = get_redis()
    [pending] = [
        key
        for key in client_redis.scan_iter(f"trailmark:{tenant.tenant_id}:registration:*")
        if b"late@example.com" in (client_redis.get(key) or b"")
    ]
    assert 0 < int(client_redis.ttl(pending)) <= 24 * 3600
    client_redis.pexpire(pending, 1)
    wait_until(lambda: not client_redis.exists(pending), 10, "the registration to expire")
    expired = client.get(path_of(late_link))
    assert expired.status_code == 422 and "expired" in expired.text
    assert len(rows(tenant)[1]) == 1  # only once@ became a member
    forged = client.get(f"/s/{tenant.slug}/m/{site_id}/register/confirm?token=not-a-token")
    assert forged.status_code == 422 and "not valid" in forged.text


@pytest.mark.usefixtures("pipeline")
def test_registration_answers_the_same_for_unknown_known_member_and_disabled_addresses(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    add_contact(client, tenant, BOB, "Bob")
    add_member(tenant, site_id, "member@example.com", "Mem")
    add_member(tenant, site_id, "shut@example.com", "Shut")
    with tenant_session(tenant.tenant_id) as session:
        shut = "UPDATE members SET disabled = true WHERE contact_id = (SELECT id FROM contacts WHERE email = :email)"
        session.execute(text(shut), {"email": "shut@example.com"})
    before = rows(tenant)
    answers = [
        register(client, tenant, site_id, email, first_name="X")
        for email in ("nobody@example.com", BOB, "member@example.com", "shut@example.com")
    ]
    assert {(a.status_code, a.text) for a in answers} == {(200, answers[0].text)}
    assert rows(tenant) == before

    # The member learns they already have an account (and how to get in), with no registration link.
    login_link = mailbox.links("member@example.com", ALREADY, f"/m/{site_id}/login")[0]
    assert urlsplit(login_link).path == f"/s/{tenant.slug}/m/{site_id}/login"
    assert mailbox.links("member@example.com", ALREADY, f"/m/{site_id}/password/reset")
    mailbox.links("nobody@example.com", CONFIRM, f"/m/{site_id}/register/confirm")
    mailbox.links(BOB, CONFIRM, f"/m/{site_id}/register/confirm")
    assert not any(site_id in str(m) for m in mailbox.about("member@example.com", CONFIRM))
    for subject in (CONFIRM, ALREADY):  # a disabled account is sent nothing
        assert not any(site_id in str(m) for m in mailbox.about("shut@example.com", subject))
    assert log_in(client, tenant, site_id, "member@example.com").status_code == 303  # the account is untouched


def test_registration_is_throttled_per_address_and_per_ip(client: TestClient[Any], tenant: TenantHandle) -> None:
    from tenants.memberships.service import REGISTRATIONS_PER_ADDRESS, REGISTRATIONS_PER_IP

    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    statuses = [register(client, tenant, site_id, BOB).status_code for _ in range(REGISTRATIONS_PER_ADDRESS + 1)]
    assert statuses == [200] * REGISTRATIONS_PER_ADDRESS + [429]
    limited = register(client, tenant, site_id, BOB)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert "too many attempts" in limited.text
    # Another address from the same IP still goes through, until the IP's own limit.
    sent = REGISTRATIONS_PER_ADDRESS + 2  # the per-address refusals counted against the IP too
    statuses = [
        register(client, tenant, site_id, f"person{n}@example.com").status_code
        for n in range(REGISTRATIONS_PER_IP - sent + 1)
    ]
    assert statuses == [200] * (REGISTRATIONS_PER_IP - sent) + [429]
    assert register(client, tenant, site_id, "fresh@example.com").status_code == 429


def test_invalid_registrations_are_refused_with_a_message(client: TestClient[Any], tenant: TenantHandle) -> None:
    parts = setup_site(client, tenant)
    refused = register(client, tenant, parts["site"]["id"], "not-an-address")
    assert refused.status_code == 422 and "email must be an email address" in refused.text
    invite_only = api(client, tenant, "POST", "/api/v1/membership-sites", name="Private", registration="invite")
    closed = register(client, tenant, invite_only["id"], "someone@example.com")
    assert closed.status_code == 403 and "by invitation only" in closed.text


@pytest.mark.usefixtures("pipeline")
def test_an_invitation_can_be_sent_again_until_a_password_is_set(
    client: TestClient[Any], tenant: TenantHandle, mailbox: Mailbox
) -> None:
    parts = setup_site(client, tenant)
    site_id = parts["site"]["id"]
    member = api(client, tenant, "POST", f"/api/v1/membership-sites/{site_id}/members", email="inv@example.com")
    path = f"/api/v1/membership-sites/{site_id}/members/{member['id']}/invitation"
    again = client.post(path, headers=tenant.headers)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == member["id"] and again.json()["has_password"] is False
    _, fresh = mailbox.links("inv@example.com", "Your access", f"/m/{site_id}/password/set", count=2)

    token = parse_qs(urlsplit(fresh).query)["token"][0]
    chosen = {"csrf": csrf(client, path_of(fresh)), "token": token, "new_password": "from the second mail"}
    assert client.post(urlsplit(fresh).path, data=chosen, follow_redirects=False).status_code == 303
    assert log_in(client, tenant, site_id, "inv@example.com", "from the second mail").status_code == 303

    has_password = client.post(path, headers=tenant.headers)
    assert has_password.status_code == 409
    assert has_password.headers["content-type"].startswith("application/problem+json")
    assert "reset" in has_password.json()["detail"]
    other_site = api(client, tenant, "POST", "/api/v1/membership-sites", name="Other")
    for unknown in (
        f"/api/v1/membership-sites/{site_id}/members/{site_id}/invitation",
        f"/api/v1/membership-sites/{other_site['id']}/members/{member['id']}/invitation",
        f"/api/v1/membership-sites/{member['id']}/members/{member['id']}/invitation",
    ):
        missing = client.post(unknown, headers=tenant.headers)
        assert missing.status_code == 404, unknown
        assert missing.json()["status"] == 404
    reader = api(client, tenant, "POST", "/api/v1/api-keys", name="reader", scopes=["read"])
    read_only = client.post(path, headers={"Authorization": f"Bearer {reader['key']}"})
    assert read_only.status_code == 403
    assert len(mailbox.links("inv@example.com", "Your access", f"/m/{site_id}/password/set")) == 2  # none refused


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


def test_a_page_is_served_as_soon_as_it_is_created_changed_or_deleted(
    client: TestClient[Any], tenant: TenantHandle
) -> None:
    """A tenant who opens a page's address before creating it (and so caches "no such page") sees it the
    moment it is created, every change at once, and a 404 as soon as it is deleted."""
    path = f"/s/{tenant.slug}/soon"
    assert client.get(path).status_code == 404
    block = {"id": "x", "kind": "html", "html": "<p>first</p>"}
    page = api(client, tenant, "POST", "/api/v1/pages", slug="soon", title="Soon", blocks=[block])
    assert "first" in client.get(path).text
    api(client, tenant, "PATCH", f"/api/v1/pages/{page['id']}", blocks=[{**block, "html": "<p>second</p>"}])
    assert "second" in client.get(path).text
    api(client, tenant, "DELETE", f"/api/v1/pages/{page['id']}")
    assert client.get(path).status_code == 404


@pytest.mark.slow
def test_a_registration_while_redis_is_down_is_a_503_to_retry_not_a_crash(
    make_tenant: Callable[..., TenantHandle], private_redis: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    """Registration keeps its throttle and pending record in Redis; while Redis is away the person is told
    to retry (503, Retry-After) instead of getting a server error, and the same form works once it is back."""
    redis_url, redis_down, redis_up = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=redis_url)
    tenant = make_tenant("Outage")
    try:
        with httpx.Client(base_url=api.base_url, headers=tenant.headers, timeout=30) as http:
            site = http.post("/api/v1/membership-sites", json={"name": "Club", "registration": "open"}).json()
            base = f"/s/{tenant.slug}/m/{site['id']}/register"
            token = re.search(r'name="csrf" value="([^"]+)"', http.get(base).text)
            assert token is not None
            form = {"csrf": token.group(1), "email": "dana@example.com", "first_name": "Dana"}
            redis_down()
            answer = http.post(base, data=form, headers={"Origin": api.base_url})
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert answer.headers["content-type"].startswith("application/problem+json")
            redis_up()
            again = http.post(base, data=form, headers={"Origin": api.base_url})
            assert again.status_code == 200, again.text
            assert "Check your email" in again.text
    finally:
        api.stop()
