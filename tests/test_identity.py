"""Contacts, forms, tracked links and the identity rules, through the API with a real worker."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.conftest import SiteHandle, TenantHandle, make_site, token_after, wait_stored, wait_until
from tests.test_tracking import BROWSER, HEADERS, ORIGIN, batch, hit, post

pytestmark = pytest.mark.usefixtures("pipeline")

FIELDS = [
    {"name": "email", "maps_to": "email", "type": "email"},
    {"name": "first_name", "maps_to": "first_name", "required": True},
    {"name": "last_name", "maps_to": "last_name", "required": False},
    {"name": "phone", "maps_to": "phone", "type": "tel"},
]


@pytest.fixture
def site(make_tenant: Callable[..., TenantHandle]) -> SiteHandle:
    return make_site(make_tenant("Shop"), [ORIGIN])


def make_form(client: TestClient[Any], site: SiteHandle, **options: Any) -> dict[str, Any]:
    body = {"site_id": str(site.site_id), "name": "Newsletter", "fields": FIELDS, "min_fill_seconds": 1, **options}
    response = client.post("/api/v1/forms", json=body, headers=site.tenant.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def submit(
    client: TestClient[Any], form: dict[str, Any], values: dict[str, str], *, token: str | None = None, **headers: str
) -> Any:
    started = str(int(time.time() * 1000) - 5000)
    data = {"tm_started": started, **({"tm_token": token} if token else {}), **values}
    return client.post(
        f"/f/{form['form_key']}",
        data=data,
        headers={"Origin": ORIGIN, "User-Agent": BROWSER, "Accept": "application/json", **headers},
    )


def browse(client: TestClient[Any], site: SiteHandle, *paths: str, token: str | None = None) -> str:
    """Page views of one browser; returns its visitor token."""
    for path in paths:
        query = dict(parse_qs(urlsplit(path).query))
        utm = {k[4:]: v[0] for k, v in query.items() if k.startswith("utm_")}
        token = token_after(post(client, site, batch(hit(path, utm=utm), token=token)), token)
    assert token is not None
    return token


def contact_by_email(client: TestClient[Any], tenant: TenantHandle, email: str) -> dict[str, Any]:
    items = client.get("/api/v1/contacts", params={"q": email}, headers=tenant.headers).json()["items"]
    assert len(items) == 1, items
    return dict(items[0])


def visits_of_contact(tenant: TenantHandle, contact_id: str) -> int:
    with tenant_session(tenant.tenant_id) as session:
        return int(
            session.execute(text("SELECT count(*) FROM visits WHERE contact_id = :c"), {"c": contact_id}).scalar() or 0
        )


def age_links(tenant: TenantHandle) -> None:
    """Make links look sent a minute ago: a click right after sending is a mail scanner's."""
    with tenant_session(tenant.tenant_id) as session:
        session.execute(text("UPDATE email_links SET created_at = now() - interval '1 minute'"))


def test_form_submission_creates_the_contact_with_its_anonymous_history(
    client: TestClient[Any], site: SiteHandle
) -> None:
    token = browse(client, site, "/?utm_source=google&utm_medium=cpc&utm_campaign=spring", "/pricing", "/signup")
    wait_stored(site.tenant.tenant_id, 3)
    form = make_form(client, site)
    response = submit(
        client, form, {"email": "Monica@Example.com", "first_name": "Monica", "phone": "(415) 555-2671"}, token=token
    )
    assert response.status_code == 200, response.text
    contact = contact_by_email(client, site.tenant, "monica@example.com")
    assert contact["first_name"] == "Monica"
    assert contact["phone"] == "+14155552671"
    wait_until(lambda: visits_of_contact(site.tenant, contact["id"]) == 3, 30, "the history merge")
    merged = client.get(f"/api/v1/contacts/{contact['id']}", headers=site.tenant.headers).json()
    assert merged["first_touch"]["utm"] == {"source": "google", "medium": "cpc", "campaign": "spring"}
    resolved = client.get("/api/v1/resolve", params={"visitor_token": token}, headers=site.tenant.headers).json()
    assert resolved["level"] == "identified"
    assert resolved["contact_id"] == contact["id"]
    assert resolved["evidence"] == "form"
    # Later visits of this browser carry the contact from the start.
    browse(client, site, "/thanks", token=token)
    wait_until(lambda: visits_of_contact(site.tenant, contact["id"]) == 4, 30, "the next visit attributed")


def test_the_same_submission_twice_is_one_contact(client: TestClient[Any], site: SiteHandle) -> None:
    form = make_form(client, site)
    values = {"email": "twice@example.com", "first_name": "Twice", "tm_submission": "sub-1"}
    assert submit(client, form, values).status_code == 200
    assert submit(client, form, values).status_code == 200
    contact = contact_by_email(client, site.tenant, "twice@example.com")
    timeline = client.get(f"/api/v1/contacts/{contact['id']}/timeline", headers=site.tenant.headers).json()["items"]
    assert [e["kind"] for e in timeline].count("form_submission") == 1
    # Without an idempotency key it is a second submission, still of the same one contact.
    values.pop("tm_submission")
    assert submit(client, form, {**values, "email": "TWICE@example.com"}).status_code == 200
    contact_by_email(client, site.tenant, "twice@example.com")


def test_blank_values_never_overwrite(client: TestClient[Any], site: SiteHandle) -> None:
    form = make_form(client, site, fields=[*FIELDS[:2], {"name": "first_name2", "maps_to": "last_name"}])
    submit(client, form, {"email": "keep@example.com", "first_name": "Keep", "first_name2": "Me"})
    submit(client, form, {"email": "keep@example.com", "first_name": "", "first_name2": ""})
    contact = contact_by_email(client, site.tenant, "keep@example.com")
    assert (contact["first_name"], contact["last_name"]) == ("Keep", "Me")


def test_invalid_submissions_get_a_message_per_field(client: TestClient[Any], site: SiteHandle) -> None:
    form = make_form(client, site)
    response = submit(client, form, {"email": "not-an-email", "first_name": ""})
    assert response.status_code == 422
    fields = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(fields) == {"email", "first_name"}
    # A plain HTML form gets its page back with the messages and the values typed so far.
    page = client.post(
        f"/f/{form['form_key']}",
        data={"email": "nope", "first_name": "Ann", "tm_started": str(int(time.time() * 1000) - 5000)},
        headers={"Origin": ORIGIN, "User-Agent": BROWSER},
    )
    assert page.status_code == 422
    assert "must be an email address" in page.text and 'value="Ann"' in page.text


def test_spam_is_answered_like_success_but_stores_nothing(client: TestClient[Any], site: SiteHandle) -> None:
    form = make_form(client, site)
    honeypot = submit(client, form, {"email": "bot@example.com", "first_name": "Bot", "tm_hp": "gotcha"})
    assert honeypot.status_code == 200
    too_fast = client.post(
        f"/f/{form['form_key']}",
        data={"email": "fast@example.com", "first_name": "Fast", "tm_started": str(int(time.time() * 1000))},
        headers={"Origin": ORIGIN, "Accept": "application/json"},
    )
    assert too_fast.status_code == 200
    assert client.get("/api/v1/contacts", headers=site.tenant.headers).json()["items"] == []


def test_a_forms_minimum_fill_time_can_be_changed(client: TestClient[Any], site: SiteHandle) -> None:
    """A tenant whose visitors are taken for bots lowers the form's minimum fill time; the change holds."""
    form = make_form(client, site, min_fill_seconds=30)
    values = {"email": "quick@example.com", "first_name": "Quick"}
    submit(client, form, values)  # sent 5 s after the form was shown: too fast for 30 s, dropped
    assert client.get("/api/v1/contacts", headers=site.tenant.headers).json()["items"] == []
    changed = client.patch(f"/api/v1/forms/{form['id']}", json={"min_fill_seconds": 1}, headers=site.tenant.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["min_fill_seconds"] == 1
    submit(client, form, values)
    assert [c["email"] for c in client.get("/api/v1/contacts", headers=site.tenant.headers).json()["items"]] == [
        "quick@example.com"
    ]
    refused = client.patch(f"/api/v1/forms/{form['id']}", json={"min_fill_seconds": 601}, headers=site.tenant.headers)
    assert refused.status_code in (400, 422)


def test_foreign_origins_are_refused_and_floods_are_throttled(client: TestClient[Any], site: SiteHandle) -> None:
    form = make_form(client, site)
    foreign = submit(client, form, {"email": "x@example.com", "first_name": "X"}, Origin="https://evil.example")
    assert foreign.status_code == 403
    statuses = [
        submit(client, form, {"email": f"flood{i}@example.com", "first_name": "F"}).status_code for i in range(12)
    ]
    assert statuses[:10] == [200] * 10
    assert statuses[10:] == [429, 429]


def create_link(client: TestClient[Any], tenant: TenantHandle, contact_id: str, target: str) -> str:
    response = client.post(
        "/api/v1/links", json={"contact_id": contact_id, "target_url": target, "send_id": "s1"}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["url"]).split("/l/", 1)[1]


def new_contact(client: TestClient[Any], tenant: TenantHandle, email: str, first_name: str) -> str:
    response = client.post("/api/v1/contacts", json={"email": email, "first_name": first_name}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def click(client: TestClient[Any], token: str, **headers: str) -> Any:
    return client.get(f"/l/{token}", headers={"User-Agent": BROWSER, **headers}, follow_redirects=False)


def exchange(client: TestClient[Any], site: SiteHandle, code: str, token: str | None) -> Any:
    return client.post(
        f"/t/{site.site_key}/exchange",
        content=json.dumps({"code": code, "token": token}),
        headers=HEADERS,
    )


def test_an_email_click_identifies_the_device_and_merges_its_history(client: TestClient[Any], site: SiteHandle) -> None:
    monica = new_contact(client, site.tenant, "monica@example.com", "Monica")
    link = create_link(client, site.tenant, monica, f"{ORIGIN}/offer?x=1")
    age_links(site.tenant)
    device_two = browse(client, site, "/?utm_source=facebook", "/about")
    wait_stored(site.tenant.tenant_id, 2)

    response = click(client, link)
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{ORIGIN}/offer"
    code = parse_qs(target.query)["_tmc"][0]
    assert parse_qs(target.query)["x"] == ["1"]

    exchanged = exchange(client, site, code, device_two)
    assert exchanged.status_code == 200
    assert exchange(client, site, code, device_two).status_code == 404  # single use
    wait_until(lambda: visits_of_contact(site.tenant, monica) == 2, 30, "device two's history merged")
    who = client.post(f"/t/{site.site_key}/whoami", content=f'{{"token": "{device_two}"}}', headers=HEADERS).json()
    assert who == {"level": "identified", "first_name": "Monica"}  # never the email: identified can be wrong


def test_a_forwarded_link_repoints_the_device_but_never_merges_people(
    client: TestClient[Any], site: SiteHandle
) -> None:
    monica = new_contact(client, site.tenant, "monica@example.com", "Monica")
    link = create_link(client, site.tenant, monica, f"{ORIGIN}/offer")
    age_links(site.tenant)
    form = make_form(client, site)
    coworker_device = browse(client, site, "/", "/pricing")
    wait_stored(site.tenant.tenant_id, 2)
    submit(client, form, {"email": "bob@example.com", "first_name": "Bob"}, token=coworker_device)
    bob = contact_by_email(client, site.tenant, "bob@example.com")["id"]
    wait_until(lambda: visits_of_contact(site.tenant, bob) == 2, 30, "Bob's history merged")

    code = parse_qs(urlsplit(click(client, link).headers["location"]).query)["_tmc"][0]
    assert exchange(client, site, code, coworker_device).status_code == 200

    def repointed() -> bool:
        resolved = client.get("/api/v1/resolve", params={"visitor_token": coworker_device}, headers=site.tenant.headers)
        return bool(resolved.json()["contact_id"] == monica)

    wait_until(repointed, 30, "the device re-pointed to Monica")
    assert visits_of_contact(site.tenant, bob) == 2  # what happened before stays Bob's
    assert visits_of_contact(site.tenant, monica) == 0
    contacts = client.get("/api/v1/contacts", headers=site.tenant.headers).json()["items"]
    assert {c["id"] for c in contacts} == {bob, monica} and all(c["merged_into"] is None for c in contacts)
    events = client.get(f"/api/v1/contacts/{monica}/timeline", headers=site.tenant.headers).json()["items"]
    (repoint,) = [e for e in events if e["kind"] == "identity.repointed"]
    assert repoint["previous_contact_id"] == bob and repoint["detail"]["conflict"] is True
    assert repoint["evidence"] == "email_click"


def test_a_click_never_repoints_a_device_with_a_live_login(client: TestClient[Any], site: SiteHandle) -> None:
    member = new_contact(client, site.tenant, "member@example.com", "Mem")
    other = new_contact(client, site.tenant, "other@example.com", "Oth")
    device = browse(client, site, "/")
    wait_stored(site.tenant.tenant_id, 1)
    visitor_id = client.get("/api/v1/resolve", params={"visitor_token": device}, headers=site.tenant.headers).json()[
        "visitor_id"
    ]
    with tenant_session(site.tenant.tenant_id) as session:  # what a membership login leaves on the device
        session.execute(
            text(
                "UPDATE visitors SET contact_id = :c, evidence = 'login', identified_at = now(), "
                "logged_in_until = now() + interval '1 hour' WHERE id = :v"
            ),
            {"c": member, "v": visitor_id},
        )
    link = create_link(client, site.tenant, other, f"{ORIGIN}/x")
    age_links(site.tenant)
    code = parse_qs(urlsplit(click(client, link).headers["location"]).query)["_tmc"][0]
    assert exchange(client, site, code, device).status_code == 200

    def refused() -> bool:
        events = client.get(f"/api/v1/contacts/{other}/timeline", headers=site.tenant.headers).json()["items"]
        return any(e["kind"] == "identity.repoint_refused" for e in events)

    wait_until(refused, 30, "the refusal logged")
    resolved = client.get("/api/v1/resolve", params={"visitor_token": device}, headers=site.tenant.headers).json()
    assert resolved["contact_id"] == member


@pytest.mark.parametrize(
    ("headers", "method", "reason"),
    [
        ({"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}, "GET", "known scanner"),
        ({"User-Agent": BROWSER}, "HEAD", "HEAD request"),
    ],
)
def test_mail_scanners_are_redirected_but_identify_nobody(
    client: TestClient[Any], site: SiteHandle, headers: dict[str, str], method: str, reason: str
) -> None:
    contact = new_contact(client, site.tenant, "scan@example.com", "Scan")
    link = create_link(client, site.tenant, contact, f"{ORIGIN}/offer")
    age_links(site.tenant)
    response = client.request(method, f"/l/{link}", headers=headers, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"{ORIGIN}/offer"  # no one-time code for a scanner
    (entry,) = [
        e
        for e in client.get(f"/api/v1/contacts/{contact}/timeline", headers=site.tenant.headers).json()["items"]
        if e["kind"] == "link_click"
    ]
    assert entry["identifies"] is False and entry["reason"] == reason


def test_a_click_right_after_sending_identifies_nobody(client: TestClient[Any], site: SiteHandle) -> None:
    contact = new_contact(client, site.tenant, "early@example.com", "Early")
    link = create_link(client, site.tenant, contact, f"{ORIGIN}/offer")
    response = click(client, link)
    assert response.headers["location"] == f"{ORIGIN}/offer"


def test_tampered_unknown_and_expired_links_are_404_never_a_redirect(client: TestClient[Any], site: SiteHandle) -> None:
    contact = new_contact(client, site.tenant, "tamper@example.com", "T")
    link = create_link(client, site.tenant, contact, f"{ORIGIN}/offer")
    key, signature = link.split(".")
    tampered = [
        f"{key}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        f"{key[:-1]}{'A' if key[-1] != 'A' else 'B'}.{signature}",
        key,
        f"{key}.",
        "https%3A%2F%2Fevil.example",
        "x" * 200,
    ]
    for token in tampered:
        response = click(client, token)
        assert response.status_code == 404, token
        assert "location" not in response.headers
    with tenant_session(site.tenant.tenant_id) as session:
        session.execute(text("UPDATE email_links SET expires_at = now() - interval '1 second'"))
    assert click(client, link).status_code == 404


def test_links_refuse_non_http_targets(client: TestClient[Any], site: SiteHandle) -> None:
    contact = new_contact(client, site.tenant, "js@example.com", "J")
    for target in ("javascript:alert(1)", "data:text/html,hi", "//evil.example", "ftp://x.example/"):
        response = client.post(
            "/api/v1/links", json={"contact_id": contact, "target_url": target}, headers=site.tenant.headers
        )
        assert response.status_code == 422, target


def test_bulk_links_for_a_send(client: TestClient[Any], site: SiteHandle) -> None:
    ids = [new_contact(client, site.tenant, f"bulk{i}@example.com", "B") for i in range(3)]
    response = client.post(
        "/api/v1/links/bulk",
        json={"send_id": "newsletter-42", "links": [{"contact_id": c, "target_url": f"{ORIGIN}/n"} for c in ids]},
        headers=site.tenant.headers,
    )
    assert response.status_code == 201
    urls = [link["url"] for link in response.json()]
    assert len(set(urls)) == 3 and all(re.search(r"/l/[\w-]+\.[\w-]+$", u) for u in urls)


def test_explicit_merge_of_two_contacts(client: TestClient[Any], site: SiteHandle) -> None:
    keep = new_contact(client, site.tenant, "keep@example.com", "Keep")
    other = client.post(
        "/api/v1/contacts",
        json={"email": "old@example.com", "last_name": "Person", "phone": "+442079460000"},
        headers=site.tenant.headers,
    ).json()["id"]
    merged = client.post(
        f"/api/v1/contacts/{keep}/merge", json={"other_contact_id": other}, headers=site.tenant.headers
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["last_name"] == "Person" and merged.json()["phone"] == "+442079460000"
    assert client.get(f"/api/v1/contacts/{other}", headers=site.tenant.headers).json()["merged_into"] == keep
    again = client.post(f"/api/v1/contacts/{keep}/merge", json={"other_contact_id": other}, headers=site.tenant.headers)
    assert again.status_code == 409
    events = client.get(f"/api/v1/contacts/{keep}/timeline", headers=site.tenant.headers).json()["items"]
    assert any(e["kind"] == "identity.contacts_merged" and e["previous_contact_id"] == other for e in events)


def test_contacts_api_validates_and_searches(client: TestClient[Any], site: SiteHandle) -> None:
    headers = site.tenant.headers
    assert (
        client.post(
            "/api/v1/contact-fields",
            json={"key": "plan", "label": "Plan", "type": "text", "sensitive": True},
            headers=headers,
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/api/v1/contact-fields", json={"key": "seats", "label": "Seats", "type": "number"}, headers=headers
        ).status_code
        == 201
    )
    bad = client.post(
        "/api/v1/contacts", json={"email": "a@b.co", "custom": {"seats": "many", "nope": 1}}, headers=headers
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"custom.seats", "custom.nope"}
    made = client.post(
        "/api/v1/contacts",
        json={"email": "Ann@Example.com", "first_name": "Ann", "custom": {"seats": "3"}},
        headers=headers,
    )
    assert made.json()["custom"] == {"seats": 3}
    assert client.post("/api/v1/contacts", json={"email": "ann@example.com"}, headers=headers).status_code == 409
    assert [
        c["email"] for c in client.get("/api/v1/contacts", params={"q": "an"}, headers=headers).json()["items"]
    ] == ["Ann@example.com"]
    assert client.get("/api/v1/contacts", params={"q": "zed"}, headers=headers).json()["items"] == []


def test_whoami_is_anonymous_for_strangers_and_forgeries(client: TestClient[Any], site: SiteHandle) -> None:
    token = browse(client, site, "/")
    for candidate in (token, token[:-2] + "xx", None):
        body = '{"token": null}' if candidate is None else f'{{"token": "{candidate}"}}'
        who = client.post(f"/t/{site.site_key}/whoami", content=body, headers=HEADERS)
        assert who.json() == {"level": "anonymous"}
    assert (
        client.post(
            f"/t/{site.site_key}/whoami", content="{}", headers={**HEADERS, "Origin": "https://evil.example"}
        ).status_code
        == 403
    )


def test_uuid_paths_of_other_tenants_are_404(
    client: TestClient[Any], site: SiteHandle, make_tenant: Callable[..., TenantHandle]
) -> None:
    contact = new_contact(client, site.tenant, "mine@example.com", "Mine")
    stranger = make_tenant("Stranger")
    assert client.get(f"/api/v1/contacts/{contact}", headers=stranger.headers).status_code == 404
    assert client.get(f"/api/v1/contacts/{contact}/timeline", headers=stranger.headers).status_code == 404
    assert client.get(f"/api/v1/contacts/{uuid.uuid4()}", headers=site.tenant.headers).status_code == 404
