"""Staff accounts as a security reviewer would try them: throttling that never locks the real owner out, reset
and invitation links that work once, sessions that end when they should, and the owner's screens for staff,
API keys and the audit log, which nobody else reaches."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import httpx
import pytest
from sqlmodel import col, select

from tenants.errors import Conflict
from tenants.isolation import tenant_session
from tenants.models import AuditEntry, TenantUser, UserRole
from tenants.redis_store import get_redis
from tenants.security.tokens import get_signer
from tenants.staff.service import (
    ACCOUNT_FREE_FAILURES,
    FAILURES_PER_ACCOUNT_AND_IP,
    FAILURES_PER_IP,
    change_role,
    remove_staff,
)
from tests.conftest import LiveServer, start_api_server
from tests.support.dashboard import PASSWORD, add_staff, check_screen, csrf_of, login_browser, login_http

COOKIE = "tm_staff"  # `__Host-tm_staff` on https


@pytest.fixture(scope="module")
def proxied_api() -> Iterator[LiveServer]:
    """An API behind a trusted proxy (127.0.0.1), so a test can speak from several client addresses."""
    server = start_api_server(TRAILMARK_TRUSTED_PROXIES="127.0.0.1")
    yield server
    server.stop()


def attempt(base_url: str, workspace: str, email: str, password: str, ip: str | None = None) -> httpx.Response:
    """One login through the form, as a browser at ``ip`` (seen through the proxy)."""
    headers = {"X-Forwarded-For": ip} if ip else {}
    client = httpx.Client(base_url=base_url, headers=headers, follow_redirects=False, timeout=30)
    token = csrf_of(client.get("/app/login").text)
    return client.post("/app/login", data={"csrf": token, "workspace": workspace, "email": email, "password": password})


def post(client: httpx.Client, path: str, data: dict[str, Any] | None = None, page: str = "/app") -> httpx.Response:
    """Send a form of the dashboard with the page's CSRF token."""
    return client.post(path, data={"csrf": csrf_of(client.get(page).text), **(data or {})})


def actions(tenant_id: UUID) -> list[str]:
    with tenant_session(tenant_id) as session:
        return [e.action for e in session.exec(select(AuditEntry).order_by(col(AuditEntry.at)))]


def signed_in(base_url: str, cookie: str) -> bool:
    answer = httpx.get(f"{base_url}/app", cookies={COOKIE: cookie}, follow_redirects=False)
    return answer.status_code == 200


# Throttling ----------------------------------------------------------------------------------------------------


def test_an_attackers_failures_from_one_address_do_not_stop_the_owner_logging_in_from_another(
    proxied_api: LiveServer, make_tenant: Any
) -> None:
    tenant = make_tenant("Throttleco")
    for _ in range(FAILURES_PER_ACCOUNT_AND_IP):
        assert attempt(proxied_api.base_url, tenant.slug, tenant.owner_email, "guess", "203.0.113.5").status_code == 401
    refused = attempt(proxied_api.base_url, tenant.slug, tenant.owner_email, PASSWORD, "203.0.113.5")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
    assert "too many failed attempts" in refused.text
    assert attempt(proxied_api.base_url, tenant.slug, tenant.owner_email, PASSWORD, "198.51.100.7").status_code == 303


def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(
    api_server: LiveServer, make_tenant: Any
) -> None:
    tenant = make_tenant("Forgedxff")
    for number in range(FAILURES_PER_ACCOUNT_AND_IP):
        attempt(api_server.base_url, tenant.slug, tenant.owner_email, "guess", f"192.0.2.{number}")
    # Each failure claimed another address, but nobody trusts this peer's header: it is one address, now throttled.
    assert attempt(api_server.base_url, tenant.slug, tenant.owner_email, PASSWORD, "192.0.2.99").status_code == 429


def test_one_address_spraying_many_accounts_is_stopped_across_workspaces(
    proxied_api: LiveServer, make_tenant: Any
) -> None:
    first, second = make_tenant("Sprayone"), make_tenant("Spraytwo")
    for number in range(FAILURES_PER_IP):
        workspace = first.slug if number % 2 else second.slug
        attempt(proxied_api.base_url, workspace, f"user{number}@spray.example", "guess", "203.0.113.77")
    assert attempt(proxied_api.base_url, first.slug, first.owner_email, PASSWORD, "203.0.113.77").status_code == 429
    assert attempt(proxied_api.base_url, first.slug, first.owner_email, PASSWORD, "203.0.113.78").status_code == 303


def test_guesses_from_many_addresses_slow_the_account_down_and_a_reset_clears_it(
    proxied_api: LiveServer, make_tenant: Any, worker: Any, mailbox: Any
) -> None:
    tenant = make_tenant("Slowdown")
    for number in range(ACCOUNT_FREE_FAILURES):
        attempt(proxied_api.base_url, tenant.slug, tenant.owner_email, "guess", f"198.18.0.{number}")
    slowed = attempt(proxied_api.base_url, tenant.slug, tenant.owner_email, PASSWORD, "198.18.1.1")
    assert slowed.status_code == 429
    assert 0 < int(slowed.headers["retry-after"]) <= 60  # a delay, never a lock
    link = request_reset(proxied_api.base_url, tenant.slug, tenant.owner_email, mailbox)
    client = httpx.Client(base_url=proxied_api.base_url, follow_redirects=False)
    assert confirm_reset(client, link, "a brand new password").status_code == 303
    assert (
        attempt(proxied_api.base_url, tenant.slug, tenant.owner_email, "a brand new password", "198.18.1.1").status_code
        == 303
    )


# Password reset ------------------------------------------------------------------------------------------------


def request_reset(base_url: str, workspace: str, email: str, mailbox: Any) -> str:
    client = httpx.Client(base_url=base_url)
    answer = client.post(
        "/app/password-reset",
        data={"csrf": csrf_of(client.get("/app/password-reset").text), "workspace": workspace, "email": email},
    )
    assert answer.status_code == 200, answer.text
    return str(mailbox.links(email, "Reset your Trailmark password", f"workspace={workspace}&")[-1])


def confirm_reset(client: httpx.Client, link: str, password: str) -> httpx.Response:
    query = parse_qs(urlsplit(link).query)
    form_page = client.get(f"/app/password-reset/confirm?{urlsplit(link).query}")
    data = {
        "csrf": csrf_of(form_page.text) if form_page.status_code == 200 else client.cookies.get("tm_csrf", ""),
        "workspace": query["workspace"][0],
        "token": query["token"][0],
        "new_password": password,
        "confirm_password": password,
    }
    return client.post("/app/password-reset/confirm", data=data)


def test_a_reset_by_mail_works_once_ends_every_session_and_logs_in_afresh(
    api_server: LiveServer, make_tenant: Any, worker: Any, mailbox: Any
) -> None:
    tenant = make_tenant("Resetco")
    elsewhere = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    client = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    form = {"csrf": csrf_of(client.get("/app/password-reset").text), "workspace": tenant.slug}
    known = client.post("/app/password-reset", data={**form, "email": tenant.owner_email})
    unknown = client.post("/app/password-reset", data={**form, "email": "nobody@resetco.example"})
    strip = re.compile(r"\S+@\S+|value=\"[^\"]*\"")
    assert known.status_code == unknown.status_code == 200
    assert strip.sub("", known.text) == strip.sub("", unknown.text)  # the same answer for every address
    link = str(mailbox.links(tenant.owner_email, "Reset your Trailmark password", f"workspace={tenant.slug}&")[-1])
    assert mailbox.about("nobody@resetco.example", "Reset") == []

    landed = confirm_reset(client, link, "the new password 1")
    assert landed.status_code == 303 and landed.headers["location"] == "/app"
    assert signed_in(api_server.base_url, client.cookies[COOKIE])
    assert not signed_in(api_server.base_url, elsewhere.cookies[COOKIE])
    assert attempt(api_server.base_url, tenant.slug, tenant.owner_email, PASSWORD).status_code == 401
    assert attempt(api_server.base_url, tenant.slug, tenant.owner_email, "the new password 1").status_code == 303

    again = confirm_reset(httpx.Client(base_url=api_server.base_url), link, "a third password")
    assert again.status_code == 400 and "not valid, was already used" in again.text
    assert "staff.password_reset" in actions(tenant.tenant_id)


def test_an_expired_or_forged_reset_link_is_refused(api_server: LiveServer, make_tenant: Any) -> None:
    tenant = make_tenant("Expiredlink")
    with tenant_session(tenant.tenant_id) as session:
        owner = session.exec(select(TenantUser)).one()
        fingerprint = hashlib.sha256(owner.password_hash.encode()).hexdigest()[:16]
        owner_id = owner.id
    two_hours_ago = int(time.time()) - 2 * 3600
    expired = get_signer().sign("staff-password-reset", tenant.tenant_id, owner_id, ph=fingerprint, iat=two_hours_ago)
    other_purpose = get_signer().sign("staff-invitation", tenant.tenant_id, owner_id, ph=fingerprint)
    client = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    for token in (expired, other_purpose, "not-a-token"):
        opened = client.get("/app/password-reset/confirm", params={"workspace": tenant.slug, "token": token})
        assert opened.status_code == 400
        posted = client.post(
            "/app/password-reset/confirm",
            data={
                "csrf": client.cookies["tm_csrf"],
                "workspace": tenant.slug,
                "token": token,
                "new_password": "whatever password",
                "confirm_password": "whatever password",
            },
        )
        assert posted.status_code == 400
    assert attempt(api_server.base_url, tenant.slug, tenant.owner_email, PASSWORD).status_code == 303


# Sessions ------------------------------------------------------------------------------------------------------


def test_staff_sessions_last_an_idle_hour_and_twelve_hours_at_most(api_server: LiveServer, make_tenant: Any) -> None:
    tenant = make_tenant("Timeouts")
    staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    tenant_hex, _, session_id = staff.cookies[COOKIE].partition(".")
    assert tenant_hex == tenant.tenant_id.hex
    key = f"trailmark:{tenant.tenant_id}:staff-session:{hashlib.sha256(session_id.encode()).hexdigest()}"
    assert 3590 <= get_redis().ttl(key) <= 3600
    assert get_redis().get(key) is not None and session_id.encode() not in get_redis().get(key)  # type: ignore[operator]


def test_logging_out_everywhere_ends_every_other_session(api_server: LiveServer, make_tenant: Any) -> None:
    tenant = make_tenant("Everywhere")
    laptop = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    phone = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    assert "Live sessions: 2" in laptop.get("/app/account").text
    done = post(laptop, "/app/account/logout-everywhere", page="/app/account")
    assert done.status_code == 303
    assert signed_in(api_server.base_url, laptop.cookies[COOKIE])
    assert not signed_in(api_server.base_url, phone.cookies[COOKIE])
    assert "staff.logout_everywhere" in actions(tenant.tenant_id)


def test_changing_ones_password_needs_the_current_one_and_ends_other_sessions(
    api_server: LiveServer, make_tenant: Any
) -> None:
    tenant = make_tenant("Pwchange")
    laptop = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    phone = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    form = {"current_password": "wrong one", "new_password": "another password", "confirm_password": "another password"}
    wrong = post(laptop, "/app/account/password", form, page="/app/account")
    assert wrong.status_code == 422 and "current password is not right" in wrong.text
    short = post(
        laptop,
        "/app/account/password",
        {**form, "current_password": PASSWORD, "new_password": "short", "confirm_password": "short"},
        page="/app/account",
    )
    assert short.status_code == 422 and "10 to 1024 characters" in short.text
    assert signed_in(api_server.base_url, phone.cookies[COOKIE])
    changed = post(laptop, "/app/account/password", {**form, "current_password": PASSWORD}, page="/app/account")
    assert changed.status_code == 303
    assert signed_in(api_server.base_url, laptop.cookies[COOKIE])
    assert not signed_in(api_server.base_url, phone.cookies[COOKIE])
    assert attempt(api_server.base_url, tenant.slug, tenant.owner_email, "another password").status_code == 303
    assert "staff.password_change" in actions(tenant.tenant_id)


# Invitations, roles, removal -----------------------------------------------------------------------------------


def test_an_invited_person_joins_with_the_given_role_and_the_link_works_once(
    api_server: LiveServer, make_tenant: Any, worker: Any, mailbox: Any
) -> None:
    tenant = make_tenant("Inviteco")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    invited = post(owner, "/app/staff/invitations", {"email": "ed@inviteco.example", "role": "editor"}, "/app/staff")
    assert invited.status_code == 303
    assert "ed@inviteco.example" in owner.get("/app/staff").text
    link = str(mailbox.links("ed@inviteco.example", "invited", f"workspace={tenant.slug}&")[-1])
    again = post(owner, "/app/staff/invitations", {"email": "ed@inviteco.example", "role": "viewer"}, "/app/staff")
    assert again.status_code == 409

    browser = httpx.Client(base_url=api_server.base_url, follow_redirects=False)
    query = urlsplit(link).query
    opened = browser.get(f"/app/invitation?{query}")
    assert opened.status_code == 200 and "editor" in opened.text
    fields = {k: v[0] for k, v in parse_qs(query).items()}
    joined = browser.post(
        "/app/invitation",
        data={
            "csrf": csrf_of(opened.text),
            **fields,
            "password": "ed's own password",
            "confirm_password": "ed's own password",
        },
    )
    assert joined.status_code == 303
    home = browser.get("/app")
    assert home.status_code == 200 and "editor" in home.text
    assert attempt(api_server.base_url, tenant.slug, "ed@inviteco.example", "ed's own password").status_code == 303
    reused = httpx.Client(base_url=api_server.base_url).get(f"/app/invitation?{query}")
    assert reused.status_code == 400
    assert {"staff.invite", "staff.invitation_accept"} <= set(actions(tenant.tenant_id))


def test_a_resent_invitation_kills_the_old_link_and_a_revoked_one_every_link(
    api_server: LiveServer, make_tenant: Any, worker: Any, mailbox: Any
) -> None:
    tenant = make_tenant("Resendco")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    post(owner, "/app/staff/invitations", {"email": "vi@resendco.example", "role": "viewer"}, "/app/staff")
    first = str(mailbox.links("vi@resendco.example", "invited", f"workspace={tenant.slug}&")[-1])
    invitation_id = re.search(r"/app/staff/invitations/([0-9a-f-]{36})/resend", owner.get("/app/staff").text).group(1)  # type: ignore[union-attr]
    assert post(owner, f"/app/staff/invitations/{invitation_id}/resend", page="/app/staff").status_code == 303
    links = mailbox.links("vi@resendco.example", "invited", f"workspace={tenant.slug}&", count=2)
    second = next(link for link in links if link != first)
    assert httpx.get(f"{api_server.base_url}/app/invitation?{urlsplit(first).query}").status_code == 400
    assert httpx.get(f"{api_server.base_url}/app/invitation?{urlsplit(second).query}").status_code == 200
    assert post(owner, f"/app/staff/invitations/{invitation_id}/revoke", page="/app/staff").status_code == 303
    assert httpx.get(f"{api_server.base_url}/app/invitation?{urlsplit(second).query}").status_code == 400
    assert f"/app/staff/invitations/{invitation_id}/" not in owner.get("/app/staff").text
    assert {"staff.invitation_resend", "staff.invitation_revoke"} <= set(actions(tenant.tenant_id))


def test_a_role_change_ends_the_members_sessions_and_takes_effect_at_the_next_login(
    api_server: LiveServer, make_tenant: Any
) -> None:
    tenant = make_tenant("Rolechange")
    member = add_staff(tenant.tenant_id, "al@rolechange.example", UserRole.ADMIN)
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    al = login_http(api_server.base_url, tenant.slug, "al@rolechange.example")
    changed = post(owner, f"/app/staff/{member.id}/role", {"role": "owner"}, "/app/staff")
    assert changed.status_code == 303
    assert not signed_in(api_server.base_url, al.cookies[COOKIE])
    again = login_http(api_server.base_url, tenant.slug, "al@rolechange.example")
    assert again.get("/app/staff").status_code == 200  # an owner now
    assert "staff.role_change" in actions(tenant.tenant_id)


def test_the_last_owner_can_be_neither_removed_nor_demoted_and_nobody_removes_themselves(
    api_server: LiveServer, make_tenant: Any
) -> None:
    tenant = make_tenant("Lastowner")
    with tenant_session(tenant.tenant_id) as session:
        owner_id = session.exec(select(TenantUser)).one().id
    add_staff(tenant.tenant_id, "co@lastowner.example", UserRole.OWNER)
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    assert post(owner, f"/app/staff/{owner_id}/remove", page="/app/staff").status_code == 403
    assert post(owner, f"/app/staff/{owner_id}/role", {"role": "viewer"}, "/app/staff").status_code == 403
    co = login_http(api_server.base_url, tenant.slug, "co@lastowner.example")
    assert post(co, f"/app/staff/{owner_id}/remove", page="/app/staff").status_code == 303
    # co is now the only owner: demoting or removing the last owner is refused whoever asks.
    third = add_staff(tenant.tenant_id, "th@lastowner.example", UserRole.OWNER)
    th = login_http(api_server.base_url, tenant.slug, "th@lastowner.example")
    assert post(co, f"/app/staff/{third.id}/role", {"role": "admin"}, "/app/staff").status_code == 303
    assert not signed_in(api_server.base_url, th.cookies[COOKIE])
    admin = login_http(api_server.base_url, tenant.slug, "th@lastowner.example")
    assert admin.get("/app/staff").status_code == 403
    with tenant_session(tenant.tenant_id) as session:
        owners = [u.email for u in session.exec(select(TenantUser)).all() if u.role == UserRole.OWNER]
    assert owners == ["co@lastowner.example"]


def test_no_caller_of_the_service_can_leave_the_workspace_without_an_owner(make_tenant: Any) -> None:
    """The screen lets only owners try, and never on themselves; the rule itself holds for any caller."""
    tenant = make_tenant("Ownerless")
    editor = add_staff(tenant.tenant_id, "ed@ownerless.example", UserRole.EDITOR)
    with tenant_session(tenant.tenant_id) as session:
        owner = session.exec(select(TenantUser).where(TenantUser.role == UserRole.OWNER)).one()
        with pytest.raises(Conflict, match="at least one owner"):
            change_role(session, actor_id=editor.id, user_id=owner.id, role="viewer")
        with pytest.raises(Conflict, match="at least one owner"):
            remove_staff(session, actor_id=editor.id, user_id=owner.id)


def test_removing_a_member_ends_their_session(api_server: LiveServer, make_tenant: Any) -> None:
    tenant = make_tenant("Removeco")
    member = add_staff(tenant.tenant_id, "ex@removeco.example", UserRole.EDITOR)
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    ex = login_http(api_server.base_url, tenant.slug, "ex@removeco.example")
    assert post(owner, f"/app/staff/{member.id}/remove", page="/app/staff").status_code == 303
    assert not signed_in(api_server.base_url, ex.cookies[COOKIE])
    assert attempt(api_server.base_url, tenant.slug, "ex@removeco.example", PASSWORD).status_code == 401
    assert "staff.remove" in actions(tenant.tenant_id)


@pytest.mark.parametrize("role", [UserRole.ADMIN, UserRole.EDITOR, UserRole.VIEWER])
def test_only_owners_reach_staff_api_keys_and_the_audit_log(
    api_server: LiveServer, make_tenant: Any, role: UserRole
) -> None:
    tenant = make_tenant(f"Notowner{role.value}")
    with tenant_session(tenant.tenant_id) as session:
        owner_id = session.exec(select(TenantUser)).one().id
    add_staff(tenant.tenant_id, f"{role.value}@notowner.example", role)
    client = login_http(api_server.base_url, tenant.slug, f"{role.value}@notowner.example")
    home = client.get("/app").text
    for path in ("/app/staff", "/app/api-keys", "/app/audit"):
        assert f'href="{path}"' not in home
        assert client.get(path).status_code == 403
    token = csrf_of(home)
    changes = [
        ("/app/staff/invitations", {"email": "x@notowner.example", "role": "owner"}),
        (f"/app/staff/{owner_id}/role", {"role": "viewer"}),
        (f"/app/staff/{owner_id}/remove", {}),
        ("/app/api-keys", {"name": "stolen", "scopes": "read"}),
    ]
    for path, data in changes:
        assert client.post(path, data={"csrf": token, **data}).status_code == 403, path
    with tenant_session(tenant.tenant_id) as session:
        users = session.exec(select(TenantUser)).all()
        assert {(u.email, u.role) for u in users if u.id == owner_id} == {(tenant.owner_email, UserRole.OWNER)}
    assert httpx.get(f"{api_server.base_url}/api/v1/api-keys", headers=tenant.headers).json().__len__() == 1
    assert actions(tenant.tenant_id) == []


def test_another_tenants_staff_invitation_and_key_ids_are_404(api_server: LiveServer, make_tenant: Any) -> None:
    mine, theirs = make_tenant("Minehere"), make_tenant("Theirsthere")
    their_user = add_staff(theirs.tenant_id, "ed@theirsthere.example", UserRole.EDITOR)
    their_key = httpx.get(f"{api_server.base_url}/api/v1/api-keys", headers=theirs.headers).json()[0]["id"]
    owner = login_http(api_server.base_url, mine.slug, mine.owner_email)
    for path, data in (
        (f"/app/staff/{their_user.id}/role", {"role": "viewer"}),
        (f"/app/staff/{their_user.id}/remove", {}),
        (f"/app/api-keys/{their_key}/revoke", {}),
        (f"/app/staff/invitations/{uuid4()}/revoke", {}),
        (f"/app/staff/invitations/{uuid4()}/resend", {}),
    ):
        assert post(owner, path, data, "/app/staff").status_code == 404, path
    assert httpx.get(f"{api_server.base_url}/api/v1/tenant", headers=theirs.headers).status_code == 200
    with tenant_session(theirs.tenant_id) as session:
        assert session.get(TenantUser, (theirs.tenant_id, their_user.id)).role == UserRole.EDITOR  # type: ignore[union-attr]


# API keys and the audit log ------------------------------------------------------------------------------------


def test_an_owner_creates_a_key_sees_its_secret_once_and_revokes_it(api_server: LiveServer, make_tenant: Any) -> None:
    tenant = make_tenant("Keysco")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    token = csrf_of(owner.get("/app/api-keys").text)
    bad = owner.post("/app/api-keys", data={"csrf": token, "name": "", "scopes": "read"})
    assert bad.status_code == 422 and "name must be 1 to 100 characters" in bad.text
    answer = owner.post("/app/api-keys", data={"csrf": token, "name": "reporting", "scopes": ["read"]})
    # POST-redirect-GET: a reload of the answer never mints a second key.
    assert answer.status_code == 303 and answer.headers["location"] == "/app/api-keys/created"
    waiting = list(get_redis().scan_iter(f"trailmark:{tenant.tenant_id}:api-key-handover:*"))
    assert len(waiting) == 1
    created = owner.get("/app/api-keys/created")
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    secret = re.search(r'value="(tm_[^"]+)"', created.text).group(1)  # type: ignore[union-attr]
    assert secret.encode() not in (get_redis().get(waiting[0]) or b""), "Redis never held the secret in clear"
    again = owner.get("/app/api-keys/created")
    assert again.status_code == 410 and secret not in again.text and "no longer shown" in again.text
    assert get_redis().exists(waiting[0]) == 0
    assert (
        httpx.get(f"{api_server.base_url}/api/v1/tenant", headers={"Authorization": f"Bearer {secret}"}).status_code
        == 200
    )
    listing = owner.get("/app/api-keys").text
    assert "reporting" in listing and secret not in listing and secret.split("_")[2][:8] in listing
    key_id = re.search(r"/app/api-keys/([0-9a-f-]{36})/revoke", listing.split("reporting", 1)[1])
    assert key_id, "the new key has a revoke button"
    assert post(owner, f"/app/api-keys/{key_id.group(1)}/revoke", page="/app/api-keys").status_code == 303
    assert (
        httpx.get(f"{api_server.base_url}/api/v1/tenant", headers={"Authorization": f"Bearer {secret}"}).status_code
        == 401
    )
    assert "revoked" in owner.get("/app/api-keys").text
    assert {"api_key.create", "api_key.revoke"} <= set(actions(tenant.tenant_id))


def test_the_audit_log_shows_each_action_newest_first_filtered_and_paged(
    api_server: LiveServer, make_tenant: Any
) -> None:
    tenant = make_tenant("Auditco")
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    token = csrf_of(owner.get("/app/api-keys").text)
    for number in range(55):
        owner.post("/app/api-keys", data={"csrf": token, "name": f"key {number}", "scopes": "read"})
    post(owner, "/app/account/logout-everywhere", page="/app/account")
    newest = owner.get("/app/audit")
    assert newest.status_code == 200
    rows = re.findall(r"<code>([a-z_.]+)</code>", newest.text)
    assert rows[0] == "staff.logout_everywhere" and len(rows) == 50
    older = re.search(r'href="(/app/audit\?action=&amp;before=[^"]+)"', newest.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    rest = re.findall(r"<code>([a-z_.]+)</code>", owner.get(older).text)
    assert len(rest) == 6 and set(rest) == {"api_key.create"}
    filtered = re.findall(r"<code>([a-z_.]+)</code>", owner.get("/app/audit", params={"action": "staff."}).text)
    assert filtered == ["staff.logout_everywhere"]
    assert owner.get("/app/audit", params={"before": "not-a-cursor"}).status_code == 422
    assert owner.get("/app/audit", params={"action": "%"}).text.count("<code>") == 0


# Screens in a browser ------------------------------------------------------------------------------------------


def test_the_staff_screens_in_a_browser_are_accessible(
    api_server: LiveServer, make_tenant: Any, browser: Any, worker: Any, mailbox: Any
) -> None:
    tenant = make_tenant("Screensco")
    add_staff(tenant.tenant_id, "vi@screensco.example", UserRole.VIEWER)
    page = browser.new_page()
    page.goto(f"{api_server.base_url}/app/login")
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Workspace").fill(tenant.slug)
    page.get_by_label("Email").fill(tenant.owner_email)
    check_screen(page, "password-reset")
    page.get_by_role("button", name="Mail me a link").click()
    assert page.get_by_role("status").is_visible()
    link = str(mailbox.links(tenant.owner_email, "Reset your Trailmark password", f"workspace={tenant.slug}&")[-1])
    page.goto(link)
    check_screen(page, "password-reset-confirm")
    page.get_by_label("New password", exact=True).fill("chosen in the browser")
    page.get_by_label("New password again").fill("chosen in the browser")
    page.get_by_role("button", name="Set the password").click()
    page.wait_for_url(re.compile(r"/app$"))

    page.goto(f"{api_server.base_url}/app/account")
    check_screen(page, "account")
    page.goto(f"{api_server.base_url}/app/staff")
    page.get_by_label("Email").fill("new@screensco.example")
    page.get_by_role("button", name="Send the invitation").click()
    assert page.get_by_role("status").is_visible()
    check_screen(page, "staff")
    page.goto(f"{api_server.base_url}/app/api-keys")
    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create the key").click()
    page.wait_for_url(re.compile(r"/app/api-keys/created$"))
    secret = page.locator("input.api-key-secret").input_value()
    assert secret.startswith("tm_")
    check_screen(page, "api-key-created")
    page.reload()
    assert page.get_by_role("heading", level=1).inner_text() == "The key is no longer shown"
    assert secret not in page.content()
    check_screen(page, "api-key-gone")
    page.go_back()
    assert secret not in page.content(), "nor by going back"
    page.goto(f"{api_server.base_url}/app/api-keys")
    check_screen(page, "api-keys")
    page.goto(f"{api_server.base_url}/app/audit")
    assert page.get_by_text("staff.invite").is_visible()
    check_screen(page, "audit")
    invitation = str(mailbox.links("new@screensco.example", "invited", f"workspace={tenant.slug}&")[-1])
    page.context.clear_cookies()
    page.goto(invitation)
    check_screen(page, "invitation")
    page.goto(f"{api_server.base_url}/app/login")
    check_screen(page, "login")
    login_browser(page, api_server.base_url, tenant.slug, "vi@screensco.example")
    assert page.get_by_role("link", name="Staff").count() == 0
    page.close()


def test_a_member_session_of_the_old_layout_is_over_not_an_error(make_tenant: Any) -> None:
    """Sessions stored before the one session store (a different record) end quietly on the next read."""
    from tenants.memberships.sessions import read_session

    tenant = make_tenant("Oldlayout")
    session_id = "an-old-session-id-from-before-the-upgrade-0123"
    key = f"trailmark:{tenant.tenant_id}:session:{hashlib.sha256(session_id.encode()).hexdigest()}"
    get_redis().set(key, '{"tenant_id": "x", "member_id": "y", "created_at": 1}', ex=60)
    assert read_session(tenant.tenant_id, session_id) is None
    assert get_redis().get(key) is None
