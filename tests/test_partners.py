"""The partner program: referral clicks recorded by ingest, referrers bound to contacts when they identify, the one
precedence rule that credits a purchase, and the wall around each partner."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import pytest
from litestar.testing import TestClient
from sqlalchemy import text
from sqlmodel import select

from tenants.contacts.service import ContactChanges, create_contact
from tenants.isolation import partner_session, tenant_session
from tenants.models import ContactReferrer, PartnerStatus, PurchaseSource, ReferrerRule
from tenants.partners import service as partners
from tenants.partners.referrals import CreditSource, CreditStatus, referrer_for_purchase
from tenants.purchases.service import Buyer, Order, record_purchase
from tenants.security.tokens import get_signer
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import store_envelopes
from tenants.tracking.visitors import VISITOR_PURPOSE, visitor_of_browser
from tests.conftest import TenantHandle, wait_stored
from tests.support.dashboard import csrf_of
from tests.support.partners import (
    BROWSER,
    ORIGIN,
    PASSWORD,
    ProgramHandle,
    arrive_through,
    collect,
    give_password,
    hit,
    make_program,
    portal_login,
    referral_clicks,
)


@pytest.fixture
def program(make_tenant: Callable[..., TenantHandle]) -> ProgramHandle:
    return make_program(make_tenant("Shop"), "pat", "quinn")


def visitor_of(program: ProgramHandle, token: str) -> UUID:
    claims = get_signer().verify(token, VISITOR_PURPOSE, program.tenant.tenant_id)
    assert claims is not None
    return claims.subject


def make_form(client: TestClient[Any], program: ProgramHandle) -> dict[str, Any]:
    body = {
        "site_id": str(program.site.site_id),
        "name": "Newsletter",
        "fields": [{"name": "email", "maps_to": "email", "required": True}],
        "min_fill_seconds": 1,
    }
    response = client.post("/api/v1/forms", json=body, headers=program.tenant.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def fill_form(client: TestClient[Any], program: ProgramHandle, form: dict[str, Any], email: str, token: str) -> UUID:
    """Submit the form from the browser holding ``token``; returns the contact with this email."""
    started = str(int(time.time() * 1000) - 5000)
    response = client.post(
        f"/f/{form['form_key']}",
        data={"tm_started": started, "tm_token": token, "email": email},
        headers={"Origin": ORIGIN, "User-Agent": BROWSER, "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    with tenant_session(program.tenant.tenant_id) as session:
        row = session.execute(text("SELECT id FROM contacts WHERE email = :e"), {"e": email}).one()
        return UUID(str(row[0]))


def referrers(program: ProgramHandle, contact_id: UUID) -> dict[str, UUID]:
    with tenant_session(program.tenant.tenant_id) as session:
        rows = session.exec(select(ContactReferrer).where(ContactReferrer.contact_id == contact_id))
        return {row.position: row.partner_id for row in rows}


def credit(program: ProgramHandle, contact_id: UUID | None, visitor_id: UUID | None, **options: Any) -> Any:
    with tenant_session(program.tenant.tenant_id) as session:
        return referrer_for_purchase(
            session,
            contact_id,
            visitor_id,
            options.pop("at", datetime.now(UTC)),
            options.pop("promo_code", None),
            options.pop("explicit_partner_id", None),
            **options,
        )


def set_rule(program: ProgramHandle, rule: ReferrerRule) -> None:
    with tenant_session(program.tenant.tenant_id) as session:
        partners.update_program(session, program.program_id, partners.ProgramSettings(referrer_rule=rule.value))


@pytest.mark.usefixtures("pipeline")
def test_a_referral_click_is_recorded_once_from_a_real_hit_through_ingest(
    client: TestClient[Any], program: ProgramHandle
) -> None:
    """A hit carrying a partner's live code becomes one referral click with its SubID, however often the browser
    re-sends it; codes of nobody, of a suspended partner, or typed in capitals are handled as a tenant expects."""
    landing = hit("/?ref=pat-link&sid=spring", partner_code="pat-link", partner_sid="spring")
    token = collect(client, program.site, landing).json()["token"]
    for _ in range(2):
        assert collect(client, program.site, landing, token=token).status_code == 202
    with tenant_session(program.tenant.tenant_id) as session:
        partners.set_partner_status(session, program.partners["quinn"].id, PartnerStatus.SUSPENDED)
    others = [
        hit("/?ref=nobody", partner_code="nobody"),
        hit("/?ref=quinn-link", partner_code="quinn-link"),
        hit("/?ref=PAT-LINK", partner_code="PAT-LINK"),
    ]
    collect(client, program.site, *others, token=token)
    wait_stored(program.tenant.tenant_id, 4)
    clicks = sorted(referral_clicks(program.tenant), key=lambda c: c["occurred_at"])
    assert [(c["hit_id"], c["partner_id"]) for c in clicks] == [
        (UUID(landing["hit_id"]), program.partners["pat"].id),
        (UUID(others[2]["hit_id"]), program.partners["pat"].id),
    ]
    assert clicks[0]["sid"] == "spring"
    assert clicks[0]["visitor_id"] == visitor_of(program, token)
    assert clicks[0]["program_id"] == program.program_id


@pytest.mark.usefixtures("pipeline")
def test_first_and_last_referrer_across_two_partners_links(client: TestClient[Any], program: ProgramHandle) -> None:
    """A new contact gets first and last referrer from the link it came through; later, through another partner's
    link, only its last referrer moves. A purchase follows the program's rule."""
    form = make_form(client, program)
    phone = arrive_through(client, program, "pat-link")
    monica = fill_form(client, program, form, "monica@example.com", phone)
    assert referrers(program, monica) == {"first": program.partners["pat"].id, "last": program.partners["pat"].id}

    laptop = arrive_through(client, program, "quinn-link")
    fill_form(client, program, form, "monica@example.com", laptop)
    assert referrers(program, monica) == {"first": program.partners["pat"].id, "last": program.partners["quinn"].id}

    # Bought on a third device, with no live click of its own: the stored referrer the rule names.
    first = credit(program, monica, None)
    assert (first.partner_id, first.source, first.status) == (
        program.partners["pat"].id,
        CreditSource.REFERRAL,  # the contact's own devices carry live clicks: the earliest one, by the first rule
        CreditStatus.CREDITED,
    )
    set_rule(program, ReferrerRule.LAST)
    assert credit(program, monica, None).partner_id == program.partners["quinn"].id
    with tenant_session(program.tenant.tenant_id) as session:
        # Forget the clicks' devices: what is left is the referrer stored on the contact.
        session.execute(text("UPDATE visitors SET contact_id = NULL"))
    stored_last = credit(program, monica, None)
    assert (stored_last.partner_id, stored_last.source) == (program.partners["quinn"].id, CreditSource.LAST_REFERRER)
    set_rule(program, ReferrerRule.FIRST)
    stored_first = credit(program, monica, None)
    assert (stored_first.partner_id, stored_first.source) == (program.partners["pat"].id, CreditSource.FIRST_REFERRER)
    assert "new contact identified by form" in _reason(program, monica, "first")


def _reason(program: ProgramHandle, contact_id: UUID, position: str) -> str:
    with tenant_session(program.tenant.tenant_id) as session:
        row = session.get(ContactReferrer, (program.tenant.tenant_id, contact_id, program.program_id, position))
        assert row is not None
        return row.reason


@pytest.mark.usefixtures("pipeline")
def test_a_contact_created_by_the_api_never_gets_a_first_referrer(
    client: TestClient[Any], program: ProgramHandle
) -> None:
    with tenant_session(program.tenant.tenant_id) as session:
        imported = create_contact(session, ContactChanges(email="imported@example.com")).id
    form = make_form(client, program)
    browser = arrive_through(client, program, "pat-link")
    fill_form(client, program, form, "imported@example.com", browser)
    assert referrers(program, imported) == {"last": program.partners["pat"].id}


@pytest.mark.usefixtures("pipeline")
def test_a_buyer_who_checks_out_straight_from_a_link_is_the_partners_new_lead(
    client: TestClient[Any], program: ProgramHandle
) -> None:
    """No form before the checkout: the purchase's email creates the contact and identifies the browser, so the
    partner whose link brought it is its first and last referrer; an existing contact buying through another
    partner's link only moves its last referrer."""
    phone = arrive_through(client, program, "pat-link")
    with tenant_session(program.tenant.tenant_id) as session:
        new = record_purchase(session, _order("order-1", "monica@example.com", phone)).purchase.contact_id
    assert referrers(program, new) == {"first": program.partners["pat"].id, "last": program.partners["pat"].id}
    laptop = arrive_through(client, program, "quinn-link")
    with tenant_session(program.tenant.tenant_id) as session:
        record_purchase(session, _order("order-2", "monica@example.com", laptop))
    assert referrers(program, new) == {"first": program.partners["pat"].id, "last": program.partners["quinn"].id}


def test_a_click_ingest_stores_after_the_form_is_bound_as_the_form_would_have(
    client: TestClient[Any], program: ProgramHandle
) -> None:
    """A visitor clicks a partner's link and signs up a second later, before ingest has stored the click: when it
    is stored, the partner still becomes the new contact's first and last referrer (and, for a contact that
    already existed, its last referrer only)."""
    form = make_form(client, program)

    def clicked_then_identified(code: str, email: str) -> UUID:
        clicked = datetime.now(UTC) - timedelta(seconds=2)
        hit_id = uuid4()
        browser = visitor_of_browser(program.tenant.tenant_id, first_hit=(hit_id, int(clicked.timestamp() * 1000)))
        contact_id = fill_form(client, program, form, email, browser.token)  # the click is still in the stream
        ms = int(clicked.timestamp() * 1000)
        landing = Hit(hit_id=hit_id, ts=ms, url=f"{ORIGIN}/?ref={code}", path="/", partner_code=code)
        with tenant_session(program.tenant.tenant_id) as session:
            store_envelopes(
                session, [Envelope(program.tenant.tenant_id, program.site.site_id, browser.visitor_id, ms, [landing])]
            )
        return contact_id

    monica = clicked_then_identified("pat-link", "monica@example.com")
    assert referrers(program, monica) == {"first": program.partners["pat"].id, "last": program.partners["pat"].id}
    assert "new contact identified by form" in _reason(program, monica, "first")
    assert clicked_then_identified("quinn-link", "monica@example.com") == monica
    assert referrers(program, monica) == {"first": program.partners["pat"].id, "last": program.partners["quinn"].id}


def _order(external_id: str, email: str, visitor_token: str) -> Order:
    return Order(
        source=PurchaseSource.API,
        external_id=external_id,
        amount=4200,
        currency="EUR",
        buyer=Buyer(visitor_token=visitor_token, email=email),
    )


@pytest.mark.usefixtures("pipeline")
def test_a_promo_code_beats_the_cookie_and_an_explicit_partner_beats_both(
    client: TestClient[Any], program: ProgramHandle
) -> None:
    browser = visitor_of(program, arrive_through(client, program, "pat-link"))
    assert credit(program, None, browser).partner_id == program.partners["pat"].id
    by_code = credit(program, None, browser, promo_code="QUINN-PROMO")
    assert (by_code.partner_id, by_code.source) == (program.partners["quinn"].id, CreditSource.PROMO_CODE)
    # A coupon of the shop's own is no partner's: the cookie decides.
    assert credit(program, None, browser, promo_code="summer-sale").partner_id == program.partners["pat"].id
    named = credit(program, None, browser, promo_code="quinn-promo", explicit_partner_id=program.partners["pat"].id)
    assert (named.partner_id, named.source) == (program.partners["pat"].id, CreditSource.EXPLICIT)


def test_self_referral_is_refused_and_the_partners_own_device_is_held(program: ProgramHandle) -> None:
    pat = program.partners["pat"]
    refused = credit(program, pat.contact_id, None, promo_code=pat.promo_code)
    assert (refused.partner_id, refused.status) == (pat.id, CreditStatus.REFUSED)
    assert "self-referral" in refused.reason
    # Another buyer, but on a browser identified as Pat: held for the tenant to review.
    with tenant_session(program.tenant.tenant_id) as session:
        buyer = create_contact(session, ContactChanges(email="friend@example.com")).id
        pats_phone = _store_click(session, program, "pat-link", datetime.now(UTC))
        session.execute(
            text("UPDATE visitors SET contact_id = :c WHERE id = :v"), {"c": pat.contact_id, "v": pats_phone}
        )
    held = credit(program, buyer, pats_phone)
    assert (held.partner_id, held.status, held.source) == (pat.id, CreditStatus.HELD, CreditSource.REFERRAL)
    assert "same device" in held.reason


def _store_click(session: Any, program: ProgramHandle, code: str, at: datetime) -> UUID:
    """A landing on ``?ref=code`` at ``at``, stored by ingest's own function (collect refuses hits older than 30
    days; the window test needs one exactly where it says)."""
    from tenants.models import new_id

    visitor_id = new_id()
    ms = int(at.timestamp() * 1000)
    landing = Hit(hit_id=new_id(), ts=ms, url=f"{ORIGIN}/?ref={code}", path="/", partner_code=code)
    envelope = Envelope(
        tenant_id=program.tenant.tenant_id,
        site_id=program.site.site_id,
        visitor_id=visitor_id,
        received_at=ms,
        hits=[landing],
    )
    store_envelopes(session, [envelope])
    return visitor_id


def test_the_window_ends_to_the_second(program: ProgramHandle) -> None:
    """A purchase one second inside the cookie window is credited; one second outside is not."""
    clicked = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    with tenant_session(program.tenant.tenant_id) as session:
        browser = _store_click(session, program, "pat-link", clicked)
    window = timedelta(days=30)
    inside = credit(program, None, browser, at=clicked + window - timedelta(seconds=1))
    assert inside is not None and inside.partner_id == program.partners["pat"].id
    assert credit(program, None, browser, at=clicked + window) is not None  # the boundary itself is inside
    assert credit(program, None, browser, at=clicked + window + timedelta(seconds=1)) is None
    assert credit(program, None, browser, at=clicked - timedelta(seconds=1)) is None  # before the click


def test_a_partner_scope_reads_nothing_of_another_partner(program: ProgramHandle) -> None:
    """Row-level security, not app code: a portal transaction reading the tables directly sees its own partner's
    rows, the contacts it referred, and nothing else of the tenant."""
    pat, quinn = program.partners["pat"], program.partners["quinn"]
    now = datetime.now(UTC)
    with tenant_session(program.tenant.tenant_id) as session:
        for code in ("pat-link", "quinn-link"):
            _store_click(session, program, code, now)
    with partner_session(program.tenant.tenant_id, pat.id) as session:

        def ids(sql: str) -> set[Any]:
            return {row[0] for row in session.execute(text(sql))}

        assert ids("SELECT id FROM partners") == {pat.id}
        assert ids("SELECT partner_id FROM partner_codes") == {pat.id}
        assert ids("SELECT partner_id FROM referral_clicks") == {pat.id}
        assert ids("SELECT id FROM contacts") == {pat.contact_id}
        assert ids("SELECT id FROM programs") == {program.program_id}
        for closed in ("visits", "visitors", "sites", "forms", "api_keys", "tenant_users"):
            assert ids(f"SELECT tenant_id FROM {closed}") == set(), closed
        assert (
            session.execute(
                text("UPDATE partners SET payout_email = 'x@y.example' WHERE id = :q"), {"q": quinn.id}
            ).rowcount
            == 0
        )  # type: ignore[attr-defined]


def test_a_partner_applies_proves_the_address_by_mail_and_waits_for_approval(
    client: TestClient[Any], program: ProgramHandle, mailbox: Any, worker: Any
) -> None:
    slug = program.tenant.slug
    form = client.get(f"/p/{slug}/apply")
    assert form.status_code == 200, form.text
    answer = client.post(
        f"/p/{slug}/apply",
        data={"csrf": csrf_of(form.text), "program_id": str(program.program_id), "email": "ana@example.com"},
    )
    assert answer.status_code == 200 and "Check your email" in answer.text
    with tenant_session(program.tenant.tenant_id) as session:
        assert not partners.list_partners(session, status=PartnerStatus.APPLIED)  # nothing before the link
    (link,) = mailbox.links("ana@example.com", "Confirm your application", f"/p/{slug}/apply/confirm")
    confirm = client.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert confirm.status_code == 200 and "ana@example.com" in confirm.text
    token = parse_qs(urlsplit(link).query)["token"][0]
    short = client.post(
        f"/p/{slug}/apply/confirm", data={"csrf": csrf_of(confirm.text), "token": token, "password": "short"}
    )
    assert short.status_code == 422 and "password" in short.text
    done = client.post(
        f"/p/{slug}/apply/confirm",
        data={"csrf": csrf_of(confirm.text), "token": token, "password": PASSWORD},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/p/{slug}"
    assert "waiting for approval" in client.get(f"/p/{slug}").text
    assert "No codes yet" in client.get(f"/p/{slug}/links").text
    # The link is used up: a second password cannot be chosen with it.
    again = client.post(
        f"/p/{slug}/apply/confirm", data={"csrf": csrf_of(confirm.text), "token": token, "password": PASSWORD}
    )
    assert again.status_code == 422

    with tenant_session(program.tenant.tenant_id) as session:
        (ana,) = partners.list_partners(session, status=PartnerStatus.APPLIED)
    approved = client.post(f"/api/v1/partners/{ana.id}/approve", headers=program.tenant.headers)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    links_page = client.get(f"/p/{slug}/links", params={"sid": "newsletter"})
    assert f"{ORIGIN}/?ref=ana-" in links_page.text and "sid=newsletter" in links_page.text
    mailbox.wait_for("ana@example.com", "You are a partner of Friends")


def test_a_partner_sees_nothing_of_another_partner_in_the_portal(program: ProgramHandle) -> None:
    from litestar.testing import TestClient as Client

    from api.app import create_app

    pat, quinn = program.partners["pat"], program.partners["quinn"]
    with tenant_session(program.tenant.tenant_id) as session:
        for code, email in (("pat-link", "paula@example.com"), ("quinn-link", "quentin@example.com")):
            browser = _store_click(session, program, code, datetime.now(UTC))
            contact = create_contact(session, ContactChanges(email=email, first_name=email[0].upper() + "x")).id
            from tenants.identity.service import link_visitor
            from tenants.models import Evidence

            link_visitor(session, visitor_id=browser, contact_id=contact, evidence=Evidence.FORM, new_contact=True)
    give_password(program.tenant, pat.id)
    with Client(app=create_app()) as client:
        assert portal_login(client, program.tenant.slug, pat.email).status_code == 303
        referrals_page = client.get(f"/p/{program.tenant.slug}/referrals").text
        assert "p•••@example.com" in referrals_page  # masked, as the program shares them by default
        assert "paula@" not in referrals_page and "quentin" not in referrals_page and "q•••" not in referrals_page
        links_page = client.get(f"/p/{program.tenant.slug}/links").text
        assert "pat-link" in links_page and "pat-promo" in links_page and "quinn" not in links_page
        home = client.get(f"/p/{program.tenant.slug}").text
        assert "<dd>1</dd>" in home  # one click, one lead: Pat's own, not Quinn's
        assert "quinn" not in client.get(f"/p/{program.tenant.slug}/settings").text.lower()
    with tenant_session(program.tenant.tenant_id) as session:
        partners.update_program(session, program.program_id, partners.ProgramSettings(shared_referral_fields="full"))
    with Client(app=create_app()) as client:
        portal_login(client, program.tenant.slug, pat.email)
        shared = client.get(f"/p/{program.tenant.slug}/referrals").text
        assert "paula@example.com" in shared and "quentin" not in shared
    assert quinn.id != pat.id


def _sale_through(session: Any, program: ProgramHandle, code: str, sid: str, *, email: str, amount: int) -> None:
    """A browser lands on ``?ref=code&sid=…``, its person buys, and the purchase is credited as the worker does."""
    from tenants.identity.service import link_visitor
    from tenants.models import Evidence, PurchaseSource, new_id
    from tenants.partners.commissions import record_commissions
    from tenants.purchases.service import Buyer, Order, record_purchase

    visitor_id = new_id()
    ms = int(datetime.now(UTC).timestamp() * 1000)
    landing = Hit(hit_id=new_id(), ts=ms, url=f"{ORIGIN}/?ref={code}&sid={sid}", path="/", partner_code=code,
                  partner_sid=sid)  # fmt: skip
    store_envelopes(session, [Envelope(program.tenant.tenant_id, program.site.site_id, visitor_id, ms, [landing])])
    contact = create_contact(session, ContactChanges(email=email)).id
    link_visitor(session, visitor_id=visitor_id, contact_id=contact, evidence=Evidence.FORM, new_contact=True)
    order = Order(source=PurchaseSource.API, external_id=f"o-{new_id()}", amount=amount, currency="EUR",
                  buyer=Buyer(contact))  # fmt: skip
    record_commissions(session, record_purchase(session, order).purchase.id)


def test_a_partner_reads_its_own_report_by_day_and_subid_and_nothing_of_another_partner(
    program: ProgramHandle,
) -> None:
    """The portal's report is the dashboard's, read in the partner's own scope: Pat sees its clicks, leads and sales
    per day and SubID, none of Quinn's; a range typed wrong is refused with the reason, never a server error."""
    from litestar.testing import TestClient as Client

    from api.app import create_app

    pat, quinn = program.partners["pat"], program.partners["quinn"]
    with tenant_session(program.tenant.tenant_id) as session:
        _sale_through(session, program, pat.link_code, "spring", email="paula@example.com", amount=4200)
        _sale_through(session, program, quinn.link_code, "quinnsecret", email="quentin@example.com", amount=9900)
    give_password(program.tenant, pat.id)
    slug, today = program.tenant.slug, datetime.now(UTC).date()
    with Client(app=create_app()) as client:
        assert client.get(f"/p/{slug}/report", follow_redirects=False).headers["location"] == f"/p/{slug}/login"
        assert portal_login(client, slug, pat.email).status_code == 303
        home = client.get(f"/p/{slug}").text
        assert f'href="/p/{slug}/report"' in home, "the portal's navigation leads to the report"
        page = client.get(f"/p/{slug}/report")
        assert page.status_code == 200
        cells = {
            name: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).split()
            for name, row in re.findall(r'<tr data-(?:sid|day)="([^"]*)">(.*?)</tr>', page.text, re.S)
        }
        # clicks, leads, purchases, customers, revenue, commission (none: the program has no earning product)
        figures = ["1", "1", "1", "1", "42.00", "EUR", "0", "0"]
        assert cells == {"spring": ["spring", *figures], today.isoformat(): [today.isoformat(), *figures]}
        assert "quinn" not in page.text.lower() and "99.00" not in page.text and "Per partner" not in page.text
        earlier = client.get(f"/p/{slug}/report", params={"start": "2020-01-01", "end": "2020-01-31"}).text
        assert "Nothing in this range" in earlier and "42.00" not in earlier
        for params, reason in (
            ({"start": "2026-02-30"}, "must be a date"),
            ({"start": today.isoformat(), "end": (today - timedelta(days=1)).isoformat()}, "on or after the start"),
            ({"start": "2020-01-01", "end": "2026-01-01"}, "at most 731 days"),
            ({"end": "0001-01-02"}, "too early"),
            ({"start": "\x00"}, "cannot be stored"),
        ):
            refused = client.get(f"/p/{slug}/report", params=params, headers={"Accept": "text/html"})
            assert refused.status_code in {400, 422}, (params, refused.status_code)
            assert reason in refused.text and refused.headers["content-type"].startswith("text/html")


def test_a_partner_of_one_tenant_cannot_log_in_at_another_tenants_portal(
    client: TestClient[Any], program: ProgramHandle, make_tenant: Callable[..., TenantHandle]
) -> None:
    other = make_program(make_tenant("Other"), "olga")
    pat = program.partners["pat"]
    give_password(program.tenant, pat.id)
    refused = portal_login(client, other.tenant.slug, pat.email)
    assert refused.status_code == 401 and "not right" in refused.text
    assert portal_login(client, program.tenant.slug, pat.email).status_code == 303
    # Pat's session cookie names nobody at the other portal.
    elsewhere = client.get(f"/p/{other.tenant.slug}", follow_redirects=False)
    assert elsewhere.status_code == 303 and elsewhere.headers["location"] == f"/p/{other.tenant.slug}/login"
    assert client.get(f"/p/{program.tenant.slug}", follow_redirects=False).status_code == 200
    wrong = portal_login(client, program.tenant.slug, pat.email, "not the password")
    assert wrong.status_code == 401


def test_suspended_partners_cannot_log_in_and_their_links_stop_counting(
    client: TestClient[Any], program: ProgramHandle
) -> None:
    pat = program.partners["pat"]
    give_password(program.tenant, pat.id)
    suspended = client.post(f"/api/v1/partners/{pat.id}/suspend", headers=program.tenant.headers)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert portal_login(client, program.tenant.slug, pat.email).status_code == 403
    # Rejecting is for applications only.
    assert client.post(f"/api/v1/partners/{pat.id}/reject", headers=program.tenant.headers).status_code == 409
    with tenant_session(program.tenant.tenant_id) as session:
        browser = _store_click(session, program, "pat-link", datetime.now(UTC))
    assert credit(program, None, browser) is None


def test_the_tenant_api_runs_a_program(client: TestClient[Any], make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Api")
    headers = tenant.headers
    body = {"name": "Affiliates", "landing_url": "https://api.example/start", "currency": "USD", "tiers": 2}
    created = client.post("/api/v1/partner-programs", json=body, headers=headers)
    assert created.status_code == 201, created.text
    program = created.json()
    assert program["referrer_rule"] == "first" and program["portal_url"].endswith(f"/p/{tenant.slug}/login")
    assert client.post("/api/v1/partner-programs", json={**body, "currency": "usd"}, headers=headers).status_code == 422
    product = {
        "product": "course",
        "level1": {"kind": "percent", "value": 3000},
        "level2": {"kind": "flat", "value": 500},
    }
    assert (
        client.post(f"/api/v1/partner-programs/{program['id']}/products", json=product, headers=headers).status_code
        == 200
    )
    too_much = {**product, "level1": {"kind": "percent", "value": 10001}}
    refused = client.post(f"/api/v1/partner-programs/{program['id']}/products", json=too_much, headers=headers)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "level1.value"
    changed = client.patch(f"/api/v1/partner-programs/{program['id']}", json={"referrer_rule": "last"}, headers=headers)
    assert changed.json()["referrer_rule"] == "last"

    partner = client.post(
        "/api/v1/partners", json={"program_id": program["id"], "email": "rita@example.com"}, headers=headers
    ).json()
    assert partner["status"] == "applied"
    again = client.post(
        "/api/v1/partners", json={"program_id": program["id"], "email": "RITA@example.com"}, headers=headers
    )
    assert again.status_code == 409
    assert client.post(f"/api/v1/partners/{partner['id']}/suspend", headers=headers).status_code == 409
    assert client.post(f"/api/v1/partners/{partner['id']}/approve", headers=headers).json()["status"] == "approved"
    codes = client.get("/api/v1/partner-codes", params={"partner_id": partner["id"]}, headers=headers).json()
    assert [c["kind"] for c in codes] == ["link"] and codes[0]["link"].startswith("https://api.example/start?ref=rita-")
    promo = {"partner_id": partner["id"], "code": "rita10", "kind": "promo"}
    assert client.post("/api/v1/partner-codes", json=promo, headers=headers).status_code == 201
    assert client.post("/api/v1/partner-codes", json=promo, headers=headers).status_code == 409
    bad = client.post("/api/v1/partner-codes", json={**promo, "code": "rita@10"}, headers=headers)
    assert bad.status_code == 422
    unknown = client.post(
        "/api/v1/partner-codes", json={**promo, "partner_id": str(uuid4()), "code": "x-1"}, headers=headers
    )
    assert unknown.status_code == 404
    other = make_tenant("Elsewhere")
    assert client.get(f"/api/v1/partners/{partner['id']}", headers=other.headers).status_code == 404
