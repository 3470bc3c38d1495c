"""Hosted pages and membership sessions in a real browser: Debian's headless
Chromium driven by Playwright against the live API process, with the real Celery worker behind it.
Each browser context is one device. The hosted pages, the form and the tracker are all on the API's
origin; the test sets the tenant up through the tenant API and reads outcomes back through it and the
database, and otherwise only does what a person does in a browser (open, fill in, click)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from uuid import UUID

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Response
from sqlalchemy import text

from tenants.contacts.service import ContactChanges, update_contact
from tenants.isolation import tenant_session
from tenants.memberships.service import create_member
from tenants.models import utcnow
from tenants.security.passwords import hash_password
from tests.browser import DESKTOP_CHROME
from tests.conftest import LiveServer, Mailbox, TenantHandle, make_site, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("pipeline")]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"
SESSION = "tm_session"  # over http; `__Host-tm_session` on https
MONICA = ("monica@example.com", "Monica")
BOB = ("bob@example.com", "Bob")
PHONE = "+15550100123"
PLAN = "gold-plan-7"  # the sensitive custom field's value: it must appear only for a logged-in member
MIN_FILL_SECONDS = 1
WAIT_MS = 30_000
WAIT_S = 60

BLOCKS = [
    {"id": "a", "kind": "html", "html": "<p>Block A for strangers</p>", "visible_to": ["anonymous"]},
    {
        "id": "b",
        "kind": "html",
        "html": "<p>Hello {{contact.first_name|there}}</p>"
        "<p>email=[{{contact.email|}}] plan=[{{contact.custom.plan|}}]</p>",
        "visible_to": ["identified", "logged_in"],
    },
    {
        "id": "c",
        "kind": "html",
        "html": "<p>Block C: {{contact.email|}} on {{contact.custom.plan|no plan}}</p>",
        "visible_to": ["logged_in"],
    },
]


@contextmanager
def device(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: no cookies, no localStorage."""
    context = browser.new_context(user_agent=DESKTOP_CHROME)
    context.set_default_timeout(WAIT_MS)
    try:
        yield context
    finally:
        context.close()


# --- the tenant: a membership site, a sensitive field, a form and two pages -----------------------


@dataclass
class Club:
    api: LiveServer
    tenant: TenantHandle
    site_id: str
    """The membership site."""
    form: dict[str, Any]

    def url(self, path: str) -> str:
        return self.api.base_url + path

    def page_path(self, slug: str) -> str:
        return f"/s/{self.tenant.slug}/{slug}"

    @property
    def home(self) -> str:
        return self.url(self.page_path("home"))

    @property
    def members(self) -> str:
        return self.url(self.page_path("members"))

    def membership(self, what: str) -> str:
        return self.url(f"/s/{self.tenant.slug}/m/{self.site_id}/{what}")

    def login_url(self, next_path: str | None = None) -> str:
        return self.membership("login") + (f"?next={quote(next_path, safe='/')}" if next_path else "")

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url(path), params=params, headers=self.tenant.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(self.url(path), json=body, headers=self.tenant.headers, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def sql(self, statement: str, **params: Any) -> Any:
        with tenant_session(self.tenant.tenant_id) as session:
            return session.execute(text(statement), params).one()

    def add_member(self, email: str, first_name: str, password: str = PASSWORD, plan: str = PLAN) -> str:
        """A member with a password (as after following the invitation) and a sensitive plan."""
        with tenant_session(self.tenant.tenant_id) as session:
            member = create_member(session, site_id=UUID(self.site_id), email=email, first_name=first_name)
            member.password_hash = hash_password(password)
            member.password_changed_at = utcnow()
            session.add(member)
            session.flush()
            update_contact(session, member.contact_id, ContactChanges(custom={"plan": plan}))
            return str(member.contact_id)

    def link(self, contact_id: str, target_url: str) -> str:
        """A tracked link as put in an email sent a minute ago (a click right after sending is a scanner's)."""
        url = str(self.post("/api/v1/links", {"contact_id": contact_id, "target_url": target_url})["url"])
        with tenant_session(self.tenant.tenant_id) as session:
            session.execute(text("UPDATE email_links SET created_at = now() - interval '1 minute'"))
        return url

    def resolve(self, visitor_token: str) -> dict[str, Any]:
        return dict(self.get("/api/v1/resolve", visitor_token=visitor_token))

    def add_contact(self, email: str, first_name: str, phone: str = PHONE, plan: str = PLAN) -> str:
        """A contact the tenant knows (not a member), with a phone and a sensitive plan on file."""
        body = {"email": email, "first_name": first_name, "phone": phone, "custom": {"plan": plan}}
        return str(self.post("/api/v1/contacts", body)["id"])

    def registration_link(self, mailbox: Mailbox, email: str) -> str:
        """The link in the newest mail that asks ``email`` to confirm a registration on this site."""
        return mailbox.links(email, "Confirm your email", f"/m/{self.site_id}/register/confirm")[-1]


@pytest.fixture
def club(api_server: LiveServer, make_tenant: Callable[..., TenantHandle]) -> Club:
    tenant = make_tenant("Club")
    club = Club(api_server, tenant, "", {})
    club.site_id = club.post(
        "/api/v1/membership-sites", {"name": "Club", "registration": "open", "landing_page_slug": "home"}
    )["id"]
    club.post("/api/v1/contact-fields", {"key": "plan", "label": "Plan", "type": "text", "sensitive": True})
    site = make_site(tenant, [api_server.base_url])
    club.form = club.post(
        "/api/v1/forms",
        {
            "site_id": str(site.site_id),
            "name": "Newsletter",
            "fields": [
                {"name": "email", "maps_to": "email"},
                {"name": "first_name", "maps_to": "first_name", "required": True},
            ],
            "min_fill_seconds": MIN_FILL_SECONDS,
            "success_redirect": club.home + "?welcome=1",
        },
    )
    form_block = {"id": "f", "kind": "form", "form_id": club.form["id"], "visible_to": ["anonymous"]}
    club.post(
        "/api/v1/pages",
        {"slug": "home", "title": "Welcome {{contact.first_name|}}", "blocks": [*BLOCKS, form_block]},
    )
    club.post(
        "/api/v1/pages",
        {
            "slug": "members",
            "title": "Members",
            "access_level": "logged_in",
            "membership_site_id": club.site_id,
            "blocks": [{"id": "s", "kind": "html", "html": "<p>Secret area</p>"}],
        },
    )
    return club


# --- what a person does -----------------------------------------------------------------------------

_FORM = "form[data-trailmark-form]"
# The form refuses (silently) a submission made faster than its minimum fill time after the page loaded.
_FILLED_LONG_ENOUGH = f"""ms => Date.now() - Number(document.querySelector('{_FORM} [name=tm_started]').value) > ms"""


def blocks(page: Page) -> list[str]:
    return list(page.eval_on_selector_all("[data-block]", "els => els.map(e => e.dataset.block)"))


def block_text(page: Page, block: str) -> str:
    return page.inner_text(f"[data-block={block}]")


def cookie(context: BrowserContext, club: Club, name: str) -> dict[str, Any] | None:
    found = [c for c in context.cookies(club.api.base_url) if c["name"] == name]
    return dict(found[0]) if found else None


def visitor_token(context: BrowserContext, club: Club) -> str:
    found = cookie(context, club, "tm_vid")
    assert found is not None, "the page set no visitor cookie"
    return unquote(found["value"]).strip('"')


def session_id(context: BrowserContext, club: Club) -> str | None:
    found = cookie(context, club, SESSION)
    return found["value"] if found else None


def submit_page_form(page: Page, club: Club, email: str, first_name: str) -> None:
    """On the hosted page: fill in the form block as a person would, send it, come back to the page."""
    page.fill(f"{_FORM} input[name=email]", email)
    page.fill(f"{_FORM} input[name=first_name]", first_name)
    page.wait_for_function(_FILLED_LONG_ENOUGH, arg=MIN_FILL_SECONDS * 1000 + 250, polling=100)
    page.click(f"{_FORM} button[type=submit]")
    page.wait_for_url(club.home + "?welcome=1")


def is_post_to(path: str) -> Callable[[Response], bool]:
    return lambda response: response.request.method == "POST" and urlsplit(response.url).path == path


def send(page: Page, action: str, how: Callable[[], None]) -> Response:
    """Send a form (``how`` does it) to ``action``; returns the POST's own response once the page it
    leads to (after any redirect) has loaded, so that the next step never races a pending navigation."""
    with page.expect_navigation(), page.expect_response(is_post_to(urlsplit(action).path)) as posted:
        how()
    return posted.value


def submit_login(page: Page, email: str, password: str) -> Response:
    """On a login page: fill it in and send it. Returns the POST's own response (303 when it worked)."""
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    return send(page, page.url, lambda: page.click("button[type=submit]"))


def log_in(page: Page, club: Club, email: str, password: str = PASSWORD, *, back_to: str | None = None) -> None:
    """Open the login page (coming back to ``back_to``, the home page by default) and log in."""
    target = back_to or club.home
    page.goto(club.login_url(urlsplit(target).path))
    response = submit_login(page, email, password)
    assert response.status == 303, response.text()
    page.wait_for_url(target)


def submit_registration(page: Page, club: Club, email: str, first_name: str, *, back_to: str | None = None) -> None:
    """Open the register page (coming back to ``back_to`` once registered) and send it: the answer
    is the same "check your email" page whoever the address belongs to."""
    page.goto(club.membership("register") + (f"?next={quote(urlsplit(back_to).path, safe='/')}" if back_to else ""))
    page.fill("input[name=first_name]", first_name)
    page.fill("input[name=email]", email)
    response = send(page, club.membership("register"), lambda: page.click("button[type=submit]"))
    assert response.status == 200, response.text()
    assert page.inner_text("h1") == "Check your email"


def finish_registration(page: Page, link: str, password: str = PASSWORD) -> Response:
    """Follow the emailed link and choose the password on its page; returns the POST's response."""
    page.goto(link)
    page.fill("input[name=password]", password)
    return send(page, link, lambda: page.click("button[type=submit]"))


def post_form_from_page(page: Page, action: str, fields: dict[str, str]) -> None:
    """Submit a form built in the current page (of our origin), carrying the page's own CSRF token, as
    a logout button on a member area would; waits for the answer's page."""
    token = page.get_attribute("input[name=csrf]", "value")
    assert token
    posted = send(
        page,
        action,
        lambda: page.evaluate(
            """([action, fields]) => {
                const form = document.createElement('form');
                form.method = 'post';
                form.action = action;
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement('input');
                    input.type = 'hidden';
                    input.name = name;
                    input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            [action, {"csrf": token, **fields}],
        ),
    )
    assert posted.status == 303, posted.text()


def assert_sees_members_area(page: Page, club: Club) -> None:
    page.goto(club.members)
    assert page.url == club.members
    assert "Secret area" in page.content()


def assert_sent_to_login(page: Page, club: Club) -> None:
    response = page.goto(club.members)
    assert response is not None and response.ok
    location = urlsplit(page.url)
    assert location.path == urlsplit(club.login_url()).path, page.url
    assert parse_qs(location.query)["next"] == [club.page_path("members")]
    assert "Secret area" not in page.content()


def assert_identified_only(page: Page) -> None:
    """Block B with the first name; no block C and no personal data anywhere on the page."""
    assert blocks(page) == ["b"]
    assert page.get_attribute("body", "data-level") == "identified"
    assert block_text(page, "b").split("\n")[0] == "Hello Monica"
    assert "email=[] plan=[]" in block_text(page, "b")
    content = page.content()
    assert MONICA[0] not in content and PLAN not in content
    assert page.title() == "Welcome Monica"


# --- the scenarios ----------------------------------------------------------------------------------


def test_an_anonymous_visitor_sees_block_a_and_the_form(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        response = page.goto(club.home)
        assert response is not None and response.status == 200
        assert blocks(page) == ["a", "f"]
        assert page.get_attribute("body", "data-level") == "anonymous"
        assert block_text(page, "a") == "Block A for strangers"
        assert page.locator(f"{_FORM}[action='{club.form['hosted_url']}']").count() == 1
        assert page.title() == "Welcome"
        content = page.content()
        assert "Hello" not in content and MONICA[0] not in content and PLAN not in content
        # The visitor cookie is the server's: HttpOnly, SameSite=Lax, long-lived; no session.
        visitor = cookie(context, club, "tm_vid")
        assert visitor is not None
        assert visitor["httpOnly"] is True and visitor["sameSite"] == "Lax"
        assert visitor["expires"] > utcnow().timestamp() + 300 * 24 * 3600
        assert page.evaluate("() => document.cookie.includes('tm_vid=')") is False
        assert session_id(context, club) is None
        assert club.resolve(visitor_token(context, club))["level"] == "anonymous"


def test_the_form_identifies_the_device_which_sees_b_with_the_first_name_and_no_personal_data(
    browser: Browser, club: Club
) -> None:
    monica = club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        page.goto(club.home)
        token = visitor_token(context, club)
        submit_page_form(page, club, *MONICA)
        assert_identified_only(page)
        assert visitor_token(context, club) == token  # the same device, now identified
        resolved = club.resolve(token)
        assert (resolved["level"], resolved["contact_id"], resolved["evidence"]) == ("identified", monica, "form")
        page.goto(club.home)  # and it stays so
        assert_identified_only(page)
        assert session_id(context, club) is None


def test_the_form_block_works_without_javascript(browser: Browser, club: Club) -> None:
    """Pages work without JavaScript: the page stamps the time it showed the form, so a person whose
    browser runs no script is not taken for a bot that filled the form too fast."""
    monica = club.add_member(*MONICA)
    context = browser.new_context(user_agent=DESKTOP_CHROME, java_script_enabled=False)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        page.goto(club.home)
        token = visitor_token(context, club)
        page.fill(f"{_FORM} input[name=email]", MONICA[0])
        page.fill(f"{_FORM} input[name=first_name]", MONICA[1])
        time.sleep(MIN_FILL_SECONDS + 0.5)  # a person takes longer than the form's minimum fill time
        page.click(f"{_FORM} button[type=submit]")
        page.wait_for_url(club.home + "?welcome=1")
        assert blocks(page) == ["b"]
        resolved = club.resolve(token)
        assert (resolved["level"], resolved["contact_id"], resolved["evidence"]) == ("identified", monica, "form")
    finally:
        context.close()


def test_the_form_with_another_persons_email_repoints_the_device_at_once(browser: Browser, club: Club) -> None:
    """Identity rule 2 on a page: Monica's device sends the form with Bob's email; from now on it is
    Bob's, starting with the page the form sends it back to."""
    club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        page.goto(club.home)
        submit_page_form(page, club, *MONICA)
        assert_identified_only(page)
        page.goto(club.form["hosted_url"])  # the form's own page (the home page shows it to strangers only)
        page.fill("input[name=email]", "bob@example.com")
        page.fill("input[name=first_name]", "Bob")
        started = "ms => Date.now() - Number(document.querySelector('[name=tm_started]').value) > ms"
        page.wait_for_function(started, arg=MIN_FILL_SECONDS * 1000 + 250, polling=100)
        page.click("button[type=submit]")
        page.wait_for_url(club.home + "?welcome=1")
        assert blocks(page) == ["b"]
        assert block_text(page, "b").split("\n")[0] == "Hello Bob"
        assert page.title() == "Welcome Bob"


@pytest.mark.parametrize(
    "history",
    [
        "seen-the-page-before",
        pytest.param("first-visit"),
    ],
)
def test_a_forwarded_link_identifies_a_device_which_sees_b_without_personal_data(
    browser: Browser, club: Club, history: str
) -> None:
    """Monica forwarded her email; Bob opens her tracked link, whose target is the hosted page. With
    the API's own cookie (seen before) the click itself identifies the device; on a first visit the
    tracker's one-time code exchange does."""
    monica = club.add_member(*MONICA)
    link = club.link(monica, club.home)
    with device(browser) as bobs_phone:
        page = bobs_phone.new_page()
        if history == "seen-the-page-before":
            page.goto(club.home)
            assert blocks(page) == ["a", "f"]
        page.goto(link)
        # The tracker strips the one-time code from the address before anything records it.
        page.wait_for_url(club.home)
        token = visitor_token(bobs_phone, club)

        def identified_by_the_click() -> bool:
            return club.sql("SELECT count(*) FROM identity_events WHERE evidence = 'email_click'")[0] > 0

        wait_until(identified_by_the_click, WAIT_S, "the re-identify task to link a device", interval=0.2)
        wait_until(
            lambda: club.resolve(token)["contact_id"] == monica,
            10,
            "the browser's own visitor cookie to resolve to Monica",
            interval=0.2,
        )
        resolved = club.resolve(token)
        assert (resolved["level"], resolved["evidence"]) == ("identified", "email_click")
        page.reload()
        assert_identified_only(page)


def test_after_login_the_member_sees_c_with_the_email_and_sensitive_fields(browser: Browser, club: Club) -> None:
    monica = club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        page.goto(club.home)
        assert blocks(page) == ["a", "f"]
        token = visitor_token(context, club)
        log_in(page, club, MONICA[0])
        assert blocks(page) == ["b", "c"]
        assert page.get_attribute("body", "data-level") == "logged_in"
        assert block_text(page, "c") == f"Block C: {MONICA[0]} on {PLAN}"
        assert f"email=[{MONICA[0]}] plan=[{PLAN}]" in block_text(page, "b")
        session = cookie(context, club, SESSION)
        assert session is not None
        assert session["httpOnly"] is True and session["sameSite"] == "Lax" and session["path"] == "/"
        # Login identifies the device it happened on.
        resolved = club.resolve(visitor_token(context, club))
        assert (resolved["contact_id"], resolved["evidence"]) == (monica, "login")
        assert resolved["visitor_id"] == club.resolve(token)["visitor_id"]


def test_a_login_without_a_destination_lands_on_the_sites_landing_page(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        page.goto(club.login_url())
        assert submit_login(page, MONICA[0], PASSWORD).status == 303
        assert page.url == club.home, f"landed on {page.url}: {page.inner_text('body')[:200]}"
        assert blocks(page) == ["b", "c"]


def test_a_logged_in_only_page_sends_a_stranger_to_login_and_back(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        assert_sent_to_login(page, club)
        assert page.get_attribute("input[name=next]", "value") == club.page_path("members")
        response = submit_login(page, MONICA[0], PASSWORD)
        assert response.status == 303
        page.wait_for_url(club.members)
        assert "Secret area" in page.content()


def test_a_planted_session_id_does_not_survive_login(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    planted = "planted-session-id-chosen-by-an-attacker-0123456789"
    with device(browser) as victim:
        victim.add_cookies([{"name": SESSION, "value": planted, "url": club.api.base_url}])
        page = victim.new_page()
        log_in(page, club, MONICA[0])
        assert blocks(page) == ["b", "c"]
        issued = session_id(victim, club)
        assert issued and issued != planted
    with device(browser) as attacker:
        attacker.add_cookies([{"name": SESSION, "value": planted, "url": club.api.base_url}])
        page = attacker.new_page()
        page.goto(club.home)
        assert blocks(page) == ["a", "f"]
        assert MONICA[0] not in page.content()
        assert_sent_to_login(page, club)


def test_logout_ends_the_session(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        log_in(page, club, MONICA[0], back_to=club.members)
        assert "Secret area" in page.content()
        old_session = session_id(context, club)
        assert old_session
        page.goto(club.login_url())  # carries the browser's CSRF token
        post_form_from_page(page, club.membership("logout"), {})
        assert urlsplit(page.url).path == urlsplit(club.membership("login")).path
        assert session_id(context, club) is None
        assert_sent_to_login(page, club)
        # Still the same person's device (identified), but no personal data without a login.
        page.goto(club.home)
        assert_identified_only(page)
    with device(browser) as replay:  # the old session ID is dead on the server, not just forgotten
        replay.add_cookies([{"name": SESSION, "value": old_session, "url": club.api.base_url}])
        page = replay.new_page()
        assert_sent_to_login(page, club)


def test_logout_everywhere_ends_the_sessions_on_every_device(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    with device(browser) as laptop, device(browser) as phone:
        on_laptop, on_phone = laptop.new_page(), phone.new_page()
        log_in(on_laptop, club, MONICA[0], back_to=club.members)
        log_in(on_phone, club, MONICA[0], back_to=club.members)
        on_laptop.goto(club.login_url())
        post_form_from_page(on_laptop, club.membership("logout-everywhere"), {})
        assert session_id(laptop, club) is None
        assert_sent_to_login(on_laptop, club)
        assert_sent_to_login(on_phone, club)


def test_a_logout_form_from_another_site_is_refused(browser: Browser, club: Club) -> None:
    """CSRF: a page elsewhere cannot log the member out (nor post any membership form)."""
    club.add_member(*MONICA)
    with device(browser) as context:
        page = context.new_page()
        log_in(page, club, MONICA[0], back_to=club.members)
        evil = "http://localhost:1/evil"  # another origin (routed, never reaches the network)
        page.route(
            evil,
            lambda route: route.fulfill(
                status=200,
                content_type="text/html",
                body=f"<form method='post' action='{club.membership('logout')}'>"
                "<input name='csrf' value='guessed-token-guessed-token-guessed-token'></form>"
                "<script>document.forms[0].submit()</script>",
            ),
        )
        with page.expect_response(is_post_to(urlsplit(club.membership("logout")).path)) as posted:
            page.goto(evil)
        assert posted.value.status == 403
        page.wait_for_url(club.membership("logout"))  # the refusal's page
        assert_sees_members_area(page, club)


def test_a_password_change_ends_the_other_sessions(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    with device(browser) as laptop, device(browser) as phone:
        on_laptop, on_phone = laptop.new_page(), phone.new_page()
        log_in(on_laptop, club, MONICA[0], back_to=club.members)
        log_in(on_phone, club, MONICA[0], back_to=club.members)
        assert "Secret area" in on_phone.content()
        before = session_id(laptop, club)

        on_laptop.goto(club.membership("password"))
        on_laptop.fill("input[name=current_password]", PASSWORD)
        on_laptop.fill("input[name=new_password]", NEW_PASSWORD)
        posted = send(on_laptop, club.membership("password"), lambda: on_laptop.click("button[type=submit]"))
        assert posted.status == 303, posted.text()
        after = session_id(laptop, club)
        assert after and after != before  # a new session ID for the device that changed it
        assert_sees_members_area(on_laptop, club)

        assert_sent_to_login(on_phone, club)  # the other session ended
        refused = submit_login(on_phone, MONICA[0], PASSWORD)
        assert refused.status == 401
        assert "the email or password is not right" in on_phone.inner_text("[role=alert]")
        assert submit_login(on_phone, MONICA[0], NEW_PASSWORD).status == 303
        on_phone.wait_for_url(club.members)
        assert "Secret area" in on_phone.content()


def test_repeated_wrong_passwords_are_throttled(browser: Browser, club: Club) -> None:
    club.add_member(*MONICA)
    club.add_member("rachel@example.com", "Rachel")
    with device(browser) as context:
        page = context.new_page()
        page.goto(club.login_url())
        for attempt in range(5):
            response = submit_login(page, MONICA[0], f"wrong password #{attempt}")
            assert response.status == 401, attempt
            assert "the email or password is not right" in page.inner_text("[role=alert]")
        sixth = submit_login(page, MONICA[0], "wrong password #6")
        assert sixth.status == 429
        assert int(sixth.headers["retry-after"]) > 0
        assert "too many failed attempts" in page.inner_text("body")
        # While throttled, even the right password is refused (the guesser learns nothing) ...
        page.goto(club.login_url())
        right = submit_login(page, MONICA[0], PASSWORD)
        assert right.status == 429
        assert session_id(context, club) is None
        # ... but the guessing does not lock another member out.
        log_in(page, club, "rachel@example.com")
        assert blocks(page) == ["b", "c"]


PAYLOAD = '<script>window.__pwned = 1; alert("x")</script><img src=x onerror="window.__pwned = 2">'


def test_script_in_a_first_name_renders_escaped(browser: Browser, club: Club, mailbox: Mailbox) -> None:
    with device(browser) as context:
        page = context.new_page()
        dialogs: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(club.home)
        submit_page_form(page, club, "mallory@example.com", PAYLOAD)

        def assert_inert() -> None:
            assert block_text(page, "b").split("\n")[0] == f"Hello {PAYLOAD}"  # shown as text, literally
            assert page.title() == f"Welcome {PAYLOAD}"
            assert page.locator("[data-block=b] script, [data-block=b] img").count() == 0
            assert page.evaluate("() => window.__pwned") is None
            assert dialogs == []

        assert blocks(page) == ["b"]
        assert_inert()

        # Logged in too (open registration, proved by mail): B and C, still inert.
        submit_registration(page, club, "mallory@example.com", PAYLOAD, back_to=club.home)
        assert finish_registration(page, club.registration_link(mailbox, "mallory@example.com")).status == 303
        page.wait_for_url(club.home)
        assert blocks(page) == ["b", "c"]
        assert_inert()


def test_a_stranger_registering_with_a_contacts_email_is_not_logged_in_and_sees_nothing_of_theirs(
    browser: Browser, club: Club, mailbox: Mailbox
) -> None:
    """The register form with Bob's address: the stranger's device stays anonymous, sees none of Bob's
    data, and Bob's record is untouched; only Bob's mailbox gets a link."""
    bob = club.add_contact(*BOB)
    with device(browser) as strangers_phone:
        page = strangers_phone.new_page()
        page.goto(club.home)
        token = visitor_token(strangers_phone, club)
        submit_registration(page, club, BOB[0], "Mallory", back_to=club.home)
        assert session_id(strangers_phone, club) is None

        def assert_nothing_of_bob() -> None:
            shown = page.content()
            assert BOB[0] not in shown and PHONE not in shown and PLAN not in shown and "Hello" not in shown

        assert_nothing_of_bob()
        page.goto(club.home)
        assert_nothing_of_bob()
        assert blocks(page) == ["a", "f"]
        assert page.get_attribute("body", "data-level") == "anonymous"
        assert visitor_token(strangers_phone, club) == token
        resolved = club.resolve(token)
        assert (resolved["level"], resolved["contact_id"]) == ("anonymous", None)
        assert_sent_to_login(page, club)
    assert club.registration_link(mailbox, BOB[0])  # the link went to Bob
    contact = club.get(f"/api/v1/contacts/{bob}")
    assert (contact["first_name"], contact["phone"]) == ("Bob", PHONE)
    assert club.get(f"/api/v1/membership-sites/{club.site_id}/members") == []


def test_the_owner_of_the_address_registers_from_the_mail_and_is_logged_in(
    browser: Browser, club: Club, mailbox: Mailbox
) -> None:
    bob = club.add_contact(*BOB)
    with device(browser) as bobs_laptop:
        page = bobs_laptop.new_page()
        assert_sent_to_login(page, club)  # the members' area asks him to log in; he has no account yet
        token = visitor_token(bobs_laptop, club)
        submit_registration(page, club, BOB[0], "Bobby", back_to=club.members)
        link = club.registration_link(mailbox, BOB[0])
        page.goto(link)
        assert BOB[0] in page.inner_text("body")  # whose password is being chosen
        assert page.get_attribute("input[name=password]", "autocomplete") == "new-password"
        assert finish_registration(page, link).status == 303
        page.wait_for_url(club.members)
        assert "Secret area" in page.content()
        page.goto(club.home)
        assert blocks(page) == ["b", "c"]
        assert block_text(page, "c") == f"Block C: {BOB[0]} on {PLAN}"
        assert block_text(page, "b").split("\n")[0] == "Hello Bob"  # his name, not the one typed at registration
        resolved = club.resolve(visitor_token(bobs_laptop, club))
        assert (resolved["contact_id"], resolved["evidence"]) == (bob, "login")
        assert resolved["visitor_id"] == club.resolve(token)["visitor_id"]
        # The link is spent: opened again, it says so and offers the way in.
        page.goto(link)
        assert "already used" in page.inner_text("[role=alert]")
    with device(browser) as bobs_phone:
        log_in(bobs_phone.new_page(), club, BOB[0])
