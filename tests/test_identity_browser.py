"""Identity in a real browser: Debian's headless Chromium driven by Playwright.
Each browser context is one device (its own cookies and storage). The tenant's site is served on its
own origin (``localhost``, the API is ``127.0.0.1``), carries the tracker snippet and the form's embed
snippet; everything travels through the real API, Redis, Celery worker and PostgreSQL, and the test
reads the outcome back through the tenant API and the database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.browser import DESKTOP_CHROME, TenantWebServer, is_collect, tenant_web_server
from tests.conftest import (
    REPO,
    LiveServer,
    SiteHandle,
    TenantHandle,
    child_env,
    log_file,
    make_site,
    start_api_server,
    start_beat,
    start_worker,
    stop,
    token_after,
    wait_stored,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("pipeline")]

MAIL_SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
LANDING_QUERY = "?utm_source=newsletter&utm_medium=email&utm_campaign=launch"
LANDING_UTM = {"source": "newsletter", "medium": "email", "campaign": "launch"}
MONICA = ("monica@example.com", "Monica")
BOB = ("bob@example.com", "Bob")
MIN_FILL_SECONDS = 1
WAIT_MS = 30_000
WAIT_S = 60

NAV = (
    '<nav><a id="to-home" href="/">Home</a> <a id="to-pricing" href="/pricing">Pricing</a> '
    '<a id="to-signup" href="/signup">Sign up</a></nav>'
)
PAGES = {
    "/": ("Home", NAV + "<h1>Welcome</h1>"),
    "/pricing": ("Pricing", NAV + "<h1>Pricing</h1>"),
    "/signup": ("Sign up", NAV + "<h1>Sign up</h1>{form}"),  # the form's embed snippet
    "/offer": ("Offer", NAV + "<h1>Our spring offer</h1>"),
    "/thanks": ("Thanks", NAV + "<h1>Thank you</h1>"),
}


# --- the tenant's web site ------------------------------------------------------------------------


@dataclass
class Shop:
    """A fresh tenant, its site, its signup form, and the web server carrying both snippets. Reads and
    writes go through ``api`` as the tenant's own code would make them."""

    api: LiveServer
    tenant: TenantHandle
    site: SiteHandle
    pages: TenantWebServer
    form: dict[str, Any]

    def url(self, path: str) -> str:
        return self.pages.origin + path

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.api.base_url}{path}", params=params, headers=self.tenant.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api.base_url}{path}", json=body, headers=self.tenant.headers, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def sql(self, statement: str, **params: Any) -> Any:
        with tenant_session(self.tenant.tenant_id) as session:
            return session.execute(text(statement), params).one()

    def new_contact(self, email: str, first_name: str) -> str:
        return str(self.post("/api/v1/contacts", {"email": email, "first_name": first_name})["id"])

    def contacts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/contacts")["items"])

    def contact_by_email(self, email: str) -> dict[str, Any]:
        items = self.get("/api/v1/contacts", q=email)["items"]
        assert len(items) == 1, items
        return dict(items[0])

    def contact(self, contact_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v1/contacts/{contact_id}"))

    def timeline(self, contact_id: str) -> list[dict[str, Any]]:
        """The whole timeline, oldest first, read page by page (the API pages it newest first)."""
        entries: list[dict[str, Any]] = []
        page = self.get(f"/api/v1/contacts/{contact_id}/timeline")
        entries += page["items"]
        while page["next_cursor"]:
            page = self.get(f"/api/v1/contacts/{contact_id}/timeline", before=page["next_cursor"])
            entries += page["items"]
        return entries[::-1]

    def resolve(self, visitor_token: str) -> dict[str, Any]:
        return dict(self.get("/api/v1/resolve", visitor_token=visitor_token))

    def link(self, contact_id: str, path: str = "/offer", *, aged: bool = True) -> str:
        """A tracked link for the contact, as put in an email. ``aged``: sent a minute ago, as a
        click right after sending is a mail scanner's."""
        url = str(self.post("/api/v1/links", {"contact_id": contact_id, "target_url": self.url(path)})["url"])
        if aged:
            with tenant_session(self.tenant.tenant_id) as session:
                session.execute(text("UPDATE email_links SET created_at = now() - interval '1 minute'"))
        return url

    def visits_of_contact(self, contact_id: str) -> int:
        return int(self.sql("SELECT count(*) FROM visits WHERE contact_id = :c", c=contact_id)[0])

    def visits_of_visitor(self, visitor_id: str) -> tuple[int, int]:
        """(visits of the visitor, of which attributed to its current contact)."""
        total, attributed = self.sql(
            """SELECT count(*), count(*) FILTER (WHERE v.contact_id = b.contact_id)
               FROM visits v JOIN visitors b ON b.tenant_id = v.tenant_id AND b.id = v.visitor_id
               WHERE v.visitor_id = :v""",
            v=visitor_id,
        )
        return int(total), int(attributed)

    def wait_all_visits_merged(self, visitor_id: str, expected: int) -> None:
        wait_until(
            lambda: self.visits_of_visitor(visitor_id) == (expected, expected),
            WAIT_S,
            f"all {expected} visits of visitor {visitor_id} attributed to its contact",
            interval=0.2,
        )

    def wait_visits(self, expected: int) -> None:
        wait_stored(self.tenant.tenant_id, expected, timeout=WAIT_S)


def open_shop(api: LiveServer, tenant: TenantHandle, pages: TenantWebServer) -> Shop:
    """Register the site and a signup form through ``api``; the pages carry what the API hands out."""
    site = make_site(tenant, [pages.origin])
    shop = Shop(api, tenant, site, pages, {})
    shop.form = shop.post(
        "/api/v1/forms",
        {
            "site_id": str(site.site_id),
            "name": "Newsletter",
            "fields": [
                {"name": "email", "maps_to": "email"},
                {"name": "first_name", "maps_to": "first_name", "required": True},
            ],
            "min_fill_seconds": MIN_FILL_SECONDS,
            "success_redirect": shop.url("/thanks"),
        },
    )
    pages.head = shop.get(f"/api/v1/sites/{site.site_id}")["snippet"]
    pages.slots["form"] = shop.form["embed_html"]
    return shop


@pytest.fixture
def shop(api_server: LiveServer, make_tenant: Callable[..., TenantHandle]) -> Iterator[Shop]:
    with tenant_web_server(PAGES) as pages:
        yield open_shop(api_server, make_tenant("Lantern"), pages)


# --- devices --------------------------------------------------------------------------------------


@contextmanager
def device(browser: Browser, user_agent: str = DESKTOP_CHROME) -> Iterator[BrowserContext]:
    """A fresh browser profile: no cookies, no localStorage."""
    context = browser.new_context(user_agent=user_agent)
    try:
        yield context
    finally:
        context.close()


# The tracker holds its token and its queue (mirrored in localStorage) is empty: every hit of the
# page got its 202. Each step waits for this, as a person reads a page before clicking on.
_SENT = """() => typeof trailmark == 'function' && !!trailmark('token')
    && JSON.parse(localStorage.getItem('tm_q') || '[]').length === 0"""
_FORM = "form[data-trailmark-form]"
# The form refuses (silently) a submission made faster than its minimum fill time after the page loaded.
_FILLED_LONG_ENOUGH = f"""ms => Date.now() - Number(document.querySelector('{_FORM} [name=tm_started]').value) > ms"""


def wait_sent(page: Page) -> None:
    page.wait_for_function(_SENT, timeout=WAIT_MS)


def goto(page: Page, url: str) -> None:
    page.goto(url)
    wait_sent(page)


def click_to(page: Page, selector: str, url: str) -> None:
    page.click(selector)
    page.wait_for_url(url)
    wait_sent(page)


def visitor_token(context: BrowserContext, shop: Shop) -> str:
    """The device's first-party visitor cookie on the tenant's site (the tracker URL-encodes it)."""
    [value] = [c["value"] for c in context.cookies(shop.url("/")) if c["name"] == "tm_vid"]
    return unquote(value)


def fill_signup(page: Page, email: str, first_name: str) -> None:
    page.fill(f"{_FORM} input[name=email]", email)
    page.fill(f"{_FORM} input[name=first_name]", first_name)
    page.wait_for_function(_FILLED_LONG_ENOUGH, arg=MIN_FILL_SECONDS * 1000 + 250, polling=100, timeout=WAIT_MS)


def submit_signup(page: Page, shop: Shop, person: tuple[str, str]) -> None:
    """On /signup: fill in the embedded form as a person would, send it, land on the site's /thanks."""
    fill_signup(page, *person)
    page.click(f"{_FORM} button[type=submit]")
    page.wait_for_url(shop.url("/thanks"))
    wait_sent(page)


def follow_link(page: Page, link: str) -> str:
    """Open a tracked link as a click from an email; returns where its 302 pointed."""
    response = page.goto(link)
    assert response is not None
    hop = response.request.redirected_from
    assert hop is not None
    assert hop.url == link
    redirect = hop.response()
    assert redirect is not None
    assert redirect.status == 302
    return str(redirect.headers["location"])


def whoami(page: Page) -> dict[str, Any]:
    return dict(page.evaluate("() => new Promise(done => trailmark('whoami', done))"))


def entries(timeline: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [entry for entry in timeline if entry["kind"] == kind]


def wait_resolves_to(shop: Shop, token: str, contact_id: str) -> dict[str, Any]:
    def resolved() -> dict[str, Any] | None:
        answer = shop.resolve(token)
        return answer if answer["contact_id"] == contact_id else None

    return dict(wait_until(resolved, WAIT_S, f"the device to resolve to contact {contact_id}", interval=0.2))


# --- the scenarios --------------------------------------------------------------------------------


def test_a_form_submission_turns_the_anonymous_device_into_a_contact_with_its_history(
    browser: Browser, shop: Shop
) -> None:
    landing = shop.url("/" + LANDING_QUERY)
    with device(browser) as context:
        page = context.new_page()
        goto(page, landing)  # from the newsletter
        click_to(page, "#to-pricing", shop.url("/pricing"))
        click_to(page, "#to-signup", shop.url("/signup"))
        token = visitor_token(context, shop)
        assert shop.resolve(token)["level"] == "anonymous"
        submit_signup(page, shop, MONICA)
        assert visitor_token(context, shop) == token  # the same device, now identified

    monica = shop.contact_by_email(MONICA[0])
    assert monica["first_name"] == "Monica"
    resolved = shop.resolve(token)
    assert (resolved["level"], resolved["contact_id"], resolved["evidence"]) == ("identified", monica["id"], "form")
    visitor_id = resolved["visitor_id"]

    shop.wait_visits(4)  # landing, pricing, signup (anonymous), thanks (identified)
    shop.wait_all_visits_merged(visitor_id, 4)
    assert shop.visits_of_contact(monica["id"]) == 4

    def first_touch() -> dict[str, Any] | None:
        return shop.contact(monica["id"])["first_touch"]

    touch = wait_until(first_touch, WAIT_S, "the contact's first touch", interval=0.2)
    assert touch["utm"] == LANDING_UTM
    assert touch["landing_page"] == landing

    timeline = shop.timeline(monica["id"])
    visits = entries(timeline, "visit")
    assert [(v["url"], v["identified"]) for v in visits] == [
        (landing, False),
        (shop.url("/pricing"), False),
        (shop.url("/signup"), False),
        (shop.url("/thanks"), True),
    ]
    assert {v["visitor_id"] for v in visits} == {visitor_id}
    [submission] = entries(timeline, "form_submission")
    assert submission["visitor_id"] == visitor_id
    assert submission["page_url"] == shop.url("/signup")
    [linked] = entries(timeline, "identity.linked")
    assert (linked["visitor_id"], linked["evidence"], linked["previous_contact_id"]) == (visitor_id, "form", None)


def test_monicas_link_identifies_her_second_device_and_merges_its_history(browser: Browser, shop: Shop) -> None:
    with device(browser) as laptop:
        page = laptop.new_page()
        goto(page, shop.url("/signup"))
        submit_signup(page, shop, MONICA)
        laptop_token = visitor_token(laptop, shop)
    monica = shop.contact_by_email(MONICA[0])["id"]
    link = shop.link(monica, "/offer?promo=spring")

    with device(browser) as phone:
        page = phone.new_page()
        goto(page, shop.url("/"))
        click_to(page, "#to-pricing", shop.url("/pricing"))
        token = visitor_token(phone, shop)
        assert shop.resolve(token)["level"] == "anonymous"

        location = follow_link(page, link)  # Monica taps the link in her email on her phone
        assert location.startswith(shop.url("/offer?promo=spring&_tmc="))  # a one-time code rides along
        page.wait_for_url(shop.url("/offer?promo=spring"))  # tracker.js exchanged it and stripped it
        wait_sent(page)
        assert page.url == shop.url("/offer?promo=spring")
        assert visitor_token(phone, shop) == token  # the same device: its cookie was kept

        resolved = wait_resolves_to(shop, token, monica)
        assert (resolved["level"], resolved["evidence"]) == ("identified", "email_click")
        # Personalization: a first name, never the email (identified can be a forwarded email).
        assert whoami(page) == {"level": "identified", "first_name": "Monica"}

    phone_visitor = resolved["visitor_id"]
    laptop_visitor = shop.resolve(laptop_token)["visitor_id"]
    shop.wait_visits(5)  # laptop: signup, thanks; phone: home, pricing, offer
    shop.wait_all_visits_merged(phone_visitor, 3)
    shop.wait_all_visits_merged(laptop_visitor, 2)
    [offer_url] = shop.sql("SELECT url FROM visits WHERE visitor_id = :v AND path = '/offer'", v=phone_visitor)
    assert offer_url == shop.url("/offer?promo=spring")  # stored without the code

    # Monica's timeline spans both devices.
    timeline = shop.timeline(monica)
    by_device = {(v["visitor_id"], v["url"]) for v in entries(timeline, "visit")}
    assert by_device == {
        (laptop_visitor, shop.url("/signup")),
        (laptop_visitor, shop.url("/thanks")),
        (phone_visitor, shop.url("/")),
        (phone_visitor, shop.url("/pricing")),
        (phone_visitor, shop.url("/offer?promo=spring")),
    }
    [click] = entries(timeline, "link_click")
    assert (click["identifies"], click["reason"], click["visitor_id"]) == (True, None, phone_visitor)
    linked = {(e["visitor_id"], e["evidence"]) for e in entries(timeline, "identity.linked")}
    assert linked == {(laptop_visitor, "form"), (phone_visitor, "email_click")}
    assert [c["id"] for c in shop.contacts()] == [monica]


def test_a_forwarded_link_repoints_the_coworkers_device_and_never_merges_people(browser: Browser, shop: Shop) -> None:
    monica = shop.new_contact(*MONICA)
    link = shop.link(monica)
    with device(browser) as bobs_laptop:
        page = bobs_laptop.new_page()
        goto(page, shop.url("/"))
        click_to(page, "#to-pricing", shop.url("/pricing"))
        click_to(page, "#to-signup", shop.url("/signup"))
        submit_signup(page, shop, BOB)
        token = visitor_token(bobs_laptop, shop)
        bob = shop.contact_by_email(BOB[0])["id"]
        visitor_id = shop.resolve(token)["visitor_id"]
        shop.wait_visits(4)
        shop.wait_all_visits_merged(visitor_id, 4)
        bobs_visits = shop.visits_of_contact(bob)
        assert bobs_visits == 4

        assert "_tmc=" in follow_link(page, link)  # Monica forwarded her email to Bob, who clicks her link
        page.wait_for_url(shop.url("/offer"))
        wait_sent(page)
        resolved = wait_resolves_to(shop, token, monica)
        assert (resolved["level"], resolved["visitor_id"], resolved["evidence"]) == (
            "identified",
            visitor_id,
            "email_click",
        )
        assert whoami(page) == {"level": "identified", "first_name": "Monica"}

    shop.wait_visits(5)
    [offer_contact] = shop.sql("SELECT contact_id FROM visits WHERE visitor_id = :v AND path = '/offer'", v=visitor_id)
    assert str(offer_contact) == monica, "the visit after the click is Monica's (re-pointed from now on)"
    assert shop.visits_of_contact(bob) == bobs_visits  # what happened before stays Bob's
    assert shop.visits_of_contact(monica) == 1

    contacts = {c["id"]: c for c in shop.contacts()}
    assert set(contacts) == {bob, monica}  # two people, not merged
    assert all(c["merged_into"] is None for c in contacts.values())
    [repoint] = entries(shop.timeline(monica), "identity.repointed")
    assert repoint["visitor_id"] == visitor_id
    assert repoint["previous_contact_id"] == bob
    assert repoint["evidence"] == "email_click"
    assert repoint["detail"]["conflict"] is True
    assert entries(shop.timeline(bob), "identity.repointed") == [repoint]  # Bob's record shows it too


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("scanner-user-agent", "known scanner"),
        ("head-request", "HEAD request"),
        ("right-after-sending", "clicked within seconds of sending"),
    ],
    ids=["scanner-user-agent", "head-request", "right-after-sending"],
)
def test_a_mail_scanner_is_redirected_but_identifies_nobody(
    browser: Browser, shop: Shop, how: str, reason: str
) -> None:
    monica = shop.new_contact(*MONICA)
    link = shop.link(monica, aged=how != "right-after-sending")
    with device(browser, MAIL_SCANNER if how == "scanner-user-agent" else DESKTOP_CHROME) as scanner:
        if how == "head-request":
            response = scanner.request.head(link, max_redirects=0)
            assert response.status == 302
            assert response.headers["location"] == shop.url("/offer")  # no one-time code
            assert "set-cookie" not in response.headers
        else:
            page = scanner.new_page()
            assert follow_link(page, link) == shop.url("/offer")  # redirected, without a one-time code
            wait_sent(page)
            token = visitor_token(scanner, shop)
            shop.wait_visits(1)  # the landing's pageview went all the way through
            assert shop.resolve(token)["level"] == "anonymous"

    [click] = entries(shop.timeline(monica), "link_click")
    assert (click["identifies"], click["reason"], click["visitor_id"]) == (False, reason, None)
    assert shop.sql("SELECT count(*) FROM visitors WHERE contact_id = :c", c=monica)[0] == 0
    assert shop.sql("SELECT count(*) FROM identity_events")[0] == 0


def test_a_tampered_link_is_a_404_page_and_never_a_redirect(browser: Browser, shop: Shop) -> None:
    monica = shop.new_contact(*MONICA)
    link = shop.link(monica)
    base, token = link.split("/l/")
    key, signature = token.split(".")
    flip = {"A": "B"}
    tampered = [
        f"{base}/l/{key}.{signature[:-1]}{flip.get(signature[-1], 'A')}",
        f"{base}/l/{key[:-1]}{flip.get(key[-1], 'A')}.{signature}",
    ]
    with device(browser) as context:
        page = context.new_page()
        for url in tampered:
            response = page.goto(url)
            assert response is not None
            assert response.status == 404, url
            assert response.request.redirected_from is None
            assert page.url == url  # still on the API, nowhere else
            assert "This link is not valid" in page.content()
        assert entries(shop.timeline(monica), "link_click") == []
        # The untouched link works: the 404s were the tampering's doing.
        assert "_tmc=" in follow_link(page, link)
    [click] = entries(shop.timeline(monica), "link_click")
    assert click["identifies"] is True


@pytest.mark.parametrize("how", ["back-button", "double-click"])
def test_the_same_submission_twice_is_one_contact(browser: Browser, shop: Shop, how: str) -> None:
    with device(browser) as context:
        page = context.new_page()
        goto(page, shop.url("/signup"))
        if how == "back-button":
            submit_signup(page, shop, MONICA)
            page.go_back()  # back to the form, and send it again
            page.wait_for_url(shop.url("/signup"))
            submit_signup(page, shop, MONICA)
            sent = {2}
        else:
            fill_signup(page, *MONICA)
            page.dblclick(f"{_FORM} button[type=submit]")
            page.wait_for_url(shop.url("/thanks"))
            wait_sent(page)
            sent = {1, 2}  # the browser may cancel the first navigation before or after it reached the API
        token = visitor_token(context, shop)

    [contact] = shop.contacts()
    assert (contact["email"], contact["first_name"]) == MONICA
    timeline = shop.timeline(contact["id"])
    assert len(entries(timeline, "form_submission")) in sent
    assert len(entries(timeline, "identity.linked")) == 1  # the second one changed nothing
    resolved = shop.resolve(token)
    assert resolved["contact_id"] == contact["id"]
    assert shop.sql("SELECT count(*) FROM visitors")[0] == 1


# --- a Redis outage -------------------------------------------------------------------------------


@contextmanager
def pipeline_on(redis_url: str) -> Iterator[None]:
    worker, beat = start_worker(TRAILMARK_REDIS_URL=redis_url), start_beat(TRAILMARK_REDIS_URL=redis_url)
    try:
        yield
    finally:
        stop(beat)
        stop(worker)


@pytest.mark.slow
def test_a_submission_while_redis_is_down_is_accepted_and_merged_after_recovery(
    browser: Browser,
    make_tenant: Callable[..., TenantHandle],
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    """The API, worker and beat run on a Redis of their own; the site's snippet and form point at
    that API. Redis goes down between browsing and submitting the form.

    The merge is queued in the ``outbox`` table with the submission. The session's own pipeline
    (another Redis) sweeps every tenant's outbox too and may run it during the outage, so the test
    checks what must hold either way: accepted during the outage, complete and exact after it."""
    redis_url, redis_down, redis_up = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=redis_url)
    try:
        with tenant_web_server(PAGES) as pages, device(browser) as context:
            shop = open_shop(api, make_tenant("Lantern"), pages)
            page = context.new_page()
            with pipeline_on(redis_url):
                goto(page, shop.url("/" + LANDING_QUERY))
                click_to(page, "#to-pricing", shop.url("/pricing"))
                shop.wait_visits(2)
            token = visitor_token(context, shop)
            visitor_id = shop.resolve(token)["visitor_id"]

            redis_down()
            with page.expect_response(lambda response: is_collect(response.url)) as refused:
                page.click("#to-signup")
            assert refused.value.status == 503  # the pageview stays in the tracker's queue
            page.wait_for_url(shop.url("/signup"))
            fill_signup(page, *MONICA)
            with page.expect_response(shop.form["hosted_url"]) as answer:  # the embed posts there
                page.click(f"{_FORM} button[type=submit]")
            assert answer.value.request.method == "POST"
            assert answer.value.status == 303
            assert answer.value.headers["location"] == shop.url("/thanks")
            page.wait_for_url(shop.url("/thanks"))
            # Accepted: the contact and the device's identification are in PostgreSQL already.
            monica = shop.contact_by_email(MONICA[0])["id"]
            resolved = shop.resolve(token)
            assert (resolved["level"], resolved["contact_id"], resolved["visitor_id"]) == (
                "identified",
                monica,
                visitor_id,
            )

            redis_up()
            with pipeline_on(redis_url):
                goto(page, shop.url("/"))  # the next page load sends what the outage held back
                # landing, pricing (before), signup, thanks (during the outage), home (after)
                shop.wait_visits(5)
                shop.wait_all_visits_merged(visitor_id, 5)
            assert shop.visits_of_contact(monica) == 5
            touch = shop.contact(monica)["first_touch"]
            assert touch is not None
            assert touch["utm"] == LANDING_UTM
            assert shop.sql("SELECT count(*) FROM outbox")[0] == 0  # every queued task was published
            [linked] = entries(shop.timeline(monica), "identity.linked")
            assert linked["visitor_id"] == visitor_id
    finally:
        api.stop()


# --- known product bugs: deterministic repros -----------------------------------------------------
# Both are races between the ingest drain and the identity tasks. Here the API, a worker consuming
# only the queues named, and beat run on a Redis of the test's own, so that the order is forced.


def start_worker_on(redis_url: str, queues: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--queues", queues, "--concurrency", "1"],
        cwd=REPO,
        env=child_env(TRAILMARK_REDIS_URL=redis_url),
        stdout=log_file("worker"),
        stderr=subprocess.STDOUT,
    )


@dataclass
class Stack:
    """A shop served by an API on a private Redis, with the workers the test starts on it."""

    redis_url: str
    shop: Shop
    processes: list[subprocess.Popen[bytes]]

    def start(self, queues: str, *, beat: bool = False) -> subprocess.Popen[bytes]:
        worker = start_worker_on(self.redis_url, queues)
        self.processes.append(worker)
        if beat:
            self.processes.append(start_beat(TRAILMARK_REDIS_URL=self.redis_url))
        return worker

    def public(self, path: str, body: str) -> httpx.Response:
        """What tracker.js posts from the site's pages."""
        headers = {"Origin": self.shop.pages.origin, "User-Agent": DESKTOP_CHROME, "Content-Type": "text/plain"}
        return httpx.post(f"{self.shop.api.base_url}{path}", content=body, headers=headers, timeout=10)

    def collect(self, path: str, token: str | None) -> str:
        query = parse_qs(urlsplit(path).query)
        hit = {
            "hit_id": str(uuid.uuid4()),
            "ts": int(time.time() * 1000),
            "url": self.shop.url(path),
            "path": urlsplit(path).path,
            "utm": {name[4:]: values[0] for name, values in query.items() if name.startswith("utm_")},
        }
        response = self.public(
            f"/collect/{self.shop.site.site_key}", json.dumps({"v": 1, "token": token, "hits": [hit]})
        )
        return token_after(response, token)

    def submit(self, person: tuple[str, str], token: str) -> None:
        """The embedded form's POST, filled in five seconds."""
        values = {"email": person[0], "first_name": person[1], "tm_token": token}
        response = httpx.post(
            f"{self.shop.api.base_url}/f/{self.shop.form['form_key']}",
            data={**values, "tm_started": str(int(time.time() * 1000) - 5000)},
            headers={"Origin": self.shop.pages.origin, "User-Agent": DESKTOP_CHROME, "Accept": "application/json"},
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def identity_tasks_done(self) -> bool:
        queue = redis.Redis.from_url(self.redis_url)
        pending = self.shop.sql("SELECT count(*) FROM outbox")[0]
        return pending == 0 and queue.llen("identity") == 0 and queue.hlen("unacked") == 0


@pytest.fixture
def private_stack(
    private_redis: tuple[str, Callable[[], None], Callable[[], None]], make_tenant: Callable[..., TenantHandle]
) -> Iterator[Stack]:
    redis_url = private_redis[0]
    api = start_api_server(TRAILMARK_REDIS_URL=redis_url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with tenant_web_server(PAGES) as pages:
            yield Stack(redis_url, open_shop(api, make_tenant("Lantern"), pages), processes)
    finally:
        for process in reversed(processes):
            stop(process)
        api.stop()


@pytest.mark.slow
def test_the_visit_right_after_a_forwarded_click_is_the_new_contacts(private_stack: Stack) -> None:
    stack, shop = private_stack, private_stack.shop
    token = stack.collect("/", None)
    stack.submit(BOB, token)  # Bob's device, identified at once
    monica = shop.new_contact(*MONICA)
    redirect = httpx.get(shop.link(monica), headers={"User-Agent": DESKTOP_CHROME}, timeout=10)
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["_tmc"][0]
    body = json.dumps({"code": code, "token": token})
    assert stack.public(f"/t/{shop.site.site_key}/exchange", body).status_code == 200
    stack.collect("/offer", token)  # what tracker.js sends once the exchange answered
    stack.start("ingest", beat=True)  # the drain runs before the identity worker gets to the task
    shop.wait_visits(2)
    stack.start("identity,default")
    wait_resolves_to(shop, token, monica)
    wait_until(stack.identity_tasks_done, WAIT_S, "the re-point's merge", interval=0.2)
    [offer_contact] = shop.sql("SELECT contact_id FROM visits WHERE path = '/offer'")
    assert str(offer_contact) == monica


@pytest.mark.slow
def test_the_contact_gets_its_first_touch_when_the_merge_runs_before_ingest(private_stack: Stack) -> None:
    stack, shop = private_stack, private_stack.shop
    token = stack.collect("/" + LANDING_QUERY, None)
    stack.submit(MONICA, token)  # linked at once; the history merge is queued
    monica = shop.contact_by_email(MONICA[0])["id"]
    merger = stack.start("identity")
    wait_until(stack.identity_tasks_done, WAIT_S, "the history merge", interval=0.2)
    stop(merger)
    assert shop.sql("SELECT count(*) FROM visits")[0] == 0  # it ran before the landing visit was stored
    stack.start("ingest,identity,default", beat=True)
    wait_until(lambda: shop.visits_of_contact(monica) == 1, WAIT_S, "the landing visit stored as Monica's")
    [visitor_touch] = shop.sql("SELECT first_touch FROM visitors")
    assert visitor_touch["utm"] == LANDING_UTM  # the visitor has it
    first_touch = shop.contact(monica)["first_touch"]
    assert first_touch is not None
    assert first_touch["utm"] == LANDING_UTM
