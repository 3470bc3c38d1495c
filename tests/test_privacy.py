"""A person's rights over their data: a tenant can hand a person everything it holds about them (export), and
erase them everywhere while keeping the bookkeeping the law requires; and anonymous data is kept no longer than
the tenant's policy says. Completeness is checked against the database catalog, so a table added later is
covered, or the suite fails."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from api.cookies import session_cookie_name
from tenants.contacts.service import ContactChanges, upsert_by_email
from tenants.identity.service import link_visitor, merge_visitor_history
from tenants.isolation import tenant_session
from tenants.memberships.sessions import read_session
from tenants.models import Evidence, Scope, UserRole, new_id
from tenants.privacy.erase import erase_person, placeholder_email, record_failure, request_erasure
from tenants.privacy.retention import ExpiryResult, expire_tenant
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import ensure_partitions_for, store_envelopes
from tenants.tracking.sites import create_site
from tests.conftest import TenantHandle, wait_until
from tests.support.ad_platforms import FakeAdPlatforms
from tests.support.conversions import send_to_google
from tests.support.dashboard import add_staff, csrf_of, login_http
from tests.support.privacy import build_person, rollups, rows_with_uuids, text_matches
from workers.app import celery_app


def _export(client: TestClient[Any], tenant: TenantHandle, contact_id: UUID) -> dict[str, Any]:
    answer = client.get(f"/api/v1/contacts/{contact_id}/export", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    return dict(json.loads(answer.content))


def test_export_holds_a_row_from_every_table_that_names_the_person_or_their_devices(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    """A person asking for their data (GDPR art. 15/20) gets every table that has anything of theirs: found here
    by searching every uuid column of every tenant table for their contact and device ids."""
    tenant = make_tenant("Exporter")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti")
    bob = build_person(tenant.tenant_id, first_name="Bob", last_name="Okafor", referred_by_partner=False)

    document = _export(client, tenant, monica.contact_id)

    assert document["format"] == "trailmark.person-export.v1"
    assert document["contact_id"] == str(monica.contact_id)
    holding = rows_with_uuids(owner_url, tenant.tenant_id, [monica.contact_id, *monica.visitor_ids])
    # The catalog search must have found the areas the person touched, or it proves nothing.
    assert {"contacts", "visitors", "visits", "form_submissions", "link_clicks", "members", "purchases"} <= set(holding)
    assert {"identity_events", "contact_referrers", "referral_clicks", "purchase_credits"} <= set(holding), holding
    missing = {table for table in holding if not document["tables"].get(table)}
    assert not missing, f"tables with the person's rows missing from the export: {sorted(missing)}"
    exported = document["tables"]
    assert len(exported["visits"]) == 9  # three devices, three pages each
    assert {row["id"] for row in exported["visitors"]} == {str(v) for v in monica.visitor_ids}
    assert exported["contacts"][0]["email"] == monica.email
    assert "password_hash" not in exported["members"][0]
    # Stripe's events name no contact but quote the buyer: hers are in, found by her address.
    assert [row["payload"]["data"]["object"]["customer_details"]["email"] for row in exported["stripe_events"]] == [
        monica.email
    ]
    assert "tenant_id" not in exported["contacts"][0]
    # Nothing of Bob's.
    assert bob.email not in json.dumps(document)
    assert all(str(v) not in json.dumps(document) for v in bob.visitor_ids)


def test_export_refusals_are_answers_not_errors(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant, other = make_tenant("Refuser"), make_tenant("Stranger")
    theirs = build_person(other.tenant_id, first_name="Rachel", last_name="Green", devices=1, member=False)
    assert client.get(f"/api/v1/contacts/{theirs.contact_id}/export", headers=tenant.headers).status_code == 404
    assert client.get("/api/v1/contacts/not-a-uuid/export", headers=tenant.headers).status_code in (400, 404)
    assert client.get(f"/api/v1/contacts/{theirs.contact_id}/export").status_code == 401
    from tenants.accounts.service import create_api_key

    with tenant_session(tenant.tenant_id) as session:
        writer = create_api_key(session, name="writer", scopes=[Scope.WRITE.value]).secret
    answer = client.get(f"/api/v1/contacts/{theirs.contact_id}/export", headers={"Authorization": f"Bearer {writer}"})
    assert answer.status_code == 403


def test_an_editor_downloads_a_persons_export_from_their_page_and_it_is_audited(
    api_server: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    """The download holds every sensitive value, so, as revealing one field, it is an editor's and audited;
    a viewer gets no such button and a 403."""
    tenant = make_tenant("Dashexport")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=2)
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    page = owner.get(f"/app/contacts/{monica.contact_id}").text
    assert f"/app/contacts/{monica.contact_id}/export.json" in page
    download = owner.get(f"/app/contacts/{monica.contact_id}/export.json")
    assert download.status_code == 200 and download.headers["cache-control"] == "no-store"
    assert {row["id"] for row in download.json()["tables"]["visitors"]} == {str(v) for v in monica.visitor_ids}
    with tenant_session(tenant.tenant_id) as session:
        audited = session.execute(
            text("SELECT actor_email, subject FROM audit_log WHERE action = 'contact.export'")
        ).all()
    assert [tuple(row) for row in audited] == [(tenant.owner_email, str(monica.contact_id))]

    add_staff(tenant.tenant_id, "viewer@dashexport.example", UserRole.VIEWER)
    viewer = login_http(api_server.base_url, tenant.slug, "viewer@dashexport.example")
    assert "export.json" not in viewer.get(f"/app/contacts/{monica.contact_id}").text
    assert viewer.get(f"/app/contacts/{monica.contact_id}/export.json").status_code == 403
    assert owner.get(f"/app/contacts/{uuid4()}/export.json").status_code == 404


def test_a_logged_in_member_downloads_their_own_data_from_the_account_page(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Memberexport")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=2)
    bob = build_person(tenant.tenant_id, first_name="Bob", last_name="Okafor", devices=1, referred_by_partner=False)
    with tenant_session(tenant.tenant_id) as session:
        site_id = session.execute(
            text("SELECT membership_site_id FROM members WHERE id = :id"), {"id": monica.member_id}
        ).scalar_one()
    base = f"/s/{tenant.slug}/m/{site_id}"
    assert client.get(f"{base}/account/export", follow_redirects=False).status_code in (302, 303)  # not logged in
    client.cookies.set(session_cookie_name(), monica.session_id or "")
    account = client.get(f"{base}/account")
    assert account.status_code == 200 and f"{base}/account/export" in account.text
    download = client.get(f"{base}/account/export")
    assert download.status_code == 200
    document = download.json()
    assert document["contact_id"] == str(monica.contact_id)
    assert document["tables"]["contacts"][0]["email"] == monica.email
    assert bob.email not in download.text


def _outbox_drained(tenant_id: UUID) -> bool:
    with tenant_session(tenant_id) as session:
        return session.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0


def _erased(client: TestClient[Any], tenant: TenantHandle, erasure_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = client.get(f"/api/v1/erasures/{erasure_id}", headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        body = dict(answer.json())
        return body if body["status"] == "done" else None

    return dict(wait_until(done, 60, "the worker to erase the person", interval=0.2))


def _purchases_recorded_as_conversions(tenant_id: UUID) -> int:
    with tenant_session(tenant_id) as session:
        return int(session.execute(text("SELECT count(*) FROM conversions WHERE kind = 'purchase'")).scalar_one())


def _conversions_of(tenant_id: UUID, contact_id: UUID) -> None:
    """Two of her conversions at a Meta pixel: a lead Meta received (with her landing's fbclid and _fbp, the
    visit's IP and user agent) and a purchase still queued."""
    from tenants.conversions.integrations import create_integration
    from tenants.models import Conversion, ConversionDelivery, ConversionKind, DeliveryStatus, Platform, utcnow

    with tenant_session(tenant_id) as session:
        # It takes nothing new (her builder's own lead may still be being recorded): only these two rows.
        meta = create_integration(
            session,
            Platform.META,
            settings={"pixel_id": "1234567890"},
            secrets={"access_token": "EAAtoken"},
            events=dict.fromkeys(("lead", "purchase", "complete_registration"), False),
        )
        touch = {"source": "converting_visit", "click_ids": {"fbclid": "F1"}, "ad_cookies": {"_fbp": "fb.1.1.2"}}
        for kind, status in (
            (ConversionKind.LEAD, DeliveryStatus.SENT),
            (ConversionKind.PURCHASE, DeliveryStatus.QUEUED),
        ):
            conversion = Conversion(
                kind=kind, event_name=kind.value, source_key=f"test:{uuid4()}", event_id=uuid4().hex,
                contact_id=contact_id, ip="198.51.100.0", user_agent="Mozilla/5.0", touches={"meta": touch},
            )  # fmt: skip
            session.add(conversion)
            session.flush()
            sent_at = utcnow() if status == DeliveryStatus.SENT else None
            session.add(
                ConversionDelivery(integration_id=meta.id, conversion_id=conversion.id, status=status, sent_at=sent_at)
            )


def _without_time(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "exported_at"}


def _retractions_settled(client: TestClient[Any], tenant: TenantHandle, erasure_id: str) -> dict[str, Any]:
    """The erase report once no retraction of it waits any more."""

    def settled() -> dict[str, Any] | None:
        report = dict(client.get(f"/api/v1/erasures/{erasure_id}", headers=tenant.headers).json()["report"])
        return report if not report["conversions"]["not_retracted"] else None

    return dict(wait_until(settled, 60, "the erase's retractions to be sent", interval=0.2))


@pytest.mark.usefixtures("worker", "mailbox")
def test_erasing_a_person_leaves_nothing_of_them_anywhere_but_keeps_their_purchase_anonymous(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle], owner_url: str, ad_platforms: FakeAdPlatforms
) -> None:
    """After an erase (GDPR art. 17), her email, names, phone and device ids are in no text or JSON column of
    any table (from the catalog, so a table added later is searched too); her purchase and the commission it
    earned remain, on an anonymous placeholder; her member session ends; the reports count what they counted;
    the lead Google Ads received is retracted there, by its order id; Bob, who shares nothing with her, is
    exactly as he was."""
    tenant = make_tenant("Eraser")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti")
    bob = build_person(tenant.tenant_id, first_name="Bob", last_name="Okafor", referred_by_partner=False)
    wait_until(lambda: _outbox_drained(tenant.tenant_id), 30, "the builders' tasks to be published")
    assert text_matches(owner_url, tenant.tenant_id, monica.terms)  # the search finds her before the erase
    counted = rollups(owner_url, tenant.tenant_id)
    assert any(counted.values())
    # Each purchase becomes a conversion through a task: let both land before Bob's "before" picture.
    wait_until(lambda: _purchases_recorded_as_conversions(tenant.tenant_id) == 2, 60, "both purchases recorded")
    bob_before = _without_time(_export(client, tenant, bob.contact_id))
    _conversions_of(tenant.tenant_id, monica.contact_id)
    google = send_to_google(tenant.tenant_id, ad_platforms, monica.contact_id)

    answer = client.post(f"/api/v1/contacts/{monica.contact_id}/erase", headers=tenant.headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    erasure = _erased(client, tenant, answer.json()["id"])
    erasure["report"] = _retractions_settled(client, tenant, answer.json()["id"])

    assert text_matches(owner_url, tenant.tenant_id, monica.terms) == {}
    assert rows_with_uuids(owner_url, tenant.tenant_id, monica.visitor_ids) == {}
    report = erasure["report"]
    assert report["requested_via"] == "api" and report["requested_by"].startswith("api_key:")
    assert report["deleted"]["visits"] == 9 and report["deleted"]["visitors"] == 3
    for table in ("form_submissions", "link_clicks", "members", "email_links", "contact_referrers", "referral_clicks"):
        assert report["deleted"].get(table), f"{table} not in the report's deletions: {report['deleted']}"
    assert report["kept"]["purchases"] == 1
    assert report["anonymised"]["stripe_events"] == 1
    assert report["sessions_ended"] == 1
    # The queued conversion is cancelled; the one Meta received is listed, as Meta cannot withdraw it.
    assert report["conversions"]["cancelled"] == 1
    [sent] = report["conversions"]["not_retractable"]
    assert (sent["platform"], sent["conversion"]) == ("meta", "lead")
    assert sent["identifiers_sent"] == ["_fbp", "email_sha256", "fbclid", "ip", "phone_sha256", "user_agent"]
    assert "no API to withdraw" in sent["why"]
    # Google's lead is withdrawn at Google: one RETRACTION naming it by its order id, no click id of hers.
    [retracted] = report["conversions"]["retracted"]
    assert (retracted["platform"], retracted["conversion"], retracted["status"]) == ("google_ads", "lead", "retracted")
    assert retracted["integration_id"] == str(google.integration_id) and retracted["retracted_at"]
    assert ad_platforms.adjustments_received[google.order_id] == 1
    adjustment = ad_platforms.retractions[google.order_id]
    assert (adjustment["adjustmentType"], adjustment["orderId"]) == ("RETRACTION", google.order_id)
    assert "gclidDateTimePair" not in adjustment
    with tenant_session(tenant.tenant_id) as session:
        kept = session.execute(text("SELECT status, order_id FROM conversion_retractions")).all()
    assert [tuple(row) for row in kept] == [("retracted", None)]  # nothing left that names her conversion

    with tenant_session(tenant.tenant_id) as session:
        contact = session.execute(
            text("SELECT email, first_name, custom, erased_at FROM contacts WHERE id = :id"),
            {"id": monica.contact_id},
        ).one()
        purchase = session.execute(
            text("SELECT contact_id, visitor_id, amount FROM purchases WHERE id = :id"), {"id": monica.purchase_id}
        ).one()
        commissions = session.execute(
            text("SELECT count(*) FROM commissions WHERE purchase_id = :id"), {"id": monica.purchase_id}
        ).scalar_one()
        events = session.execute(
            text("SELECT kind FROM identity_events WHERE contact_id = :id ORDER BY created_at"),
            {"id": monica.contact_id},
        ).all()
    assert contact.email == placeholder_email(monica.contact_id) and contact.first_name is None
    assert contact.custom == {} and contact.erased_at is not None
    assert (purchase.contact_id, purchase.visitor_id, purchase.amount) == (monica.contact_id, None, 9900)
    assert commissions == 1
    assert events[-1].kind == "erased" and len(events) > 1  # what happened stays, without the devices
    assert read_session(tenant.tenant_id, monica.session_id) is None
    assert rollups(owner_url, tenant.tenant_id) == counted
    assert _without_time(_export(client, tenant, bob.contact_id)) == bob_before

    again = client.post(f"/api/v1/contacts/{monica.contact_id}/erase", headers=tenant.headers)
    assert again.status_code == 409 and "erased already" in again.json()["detail"]
    placeholder = client.get(f"/api/v1/contacts/{monica.contact_id}", headers=tenant.headers).json()
    assert placeholder["erased_at"] is not None and placeholder["email"] == placeholder_email(monica.contact_id)
    edit = client.patch(f"/api/v1/contacts/{monica.contact_id}", headers=tenant.headers, json={"first_name": "M"})
    assert edit.status_code == 409


def test_only_an_admin_key_erases_and_unknown_people_are_404(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    from tenants.accounts.service import create_api_key

    tenant = make_tenant("Guarded")
    rachel = build_person(tenant.tenant_id, first_name="Rachel", last_name="Green", devices=1, member=False)
    with tenant_session(tenant.tenant_id) as session:
        writer = create_api_key(session, name="writer", scopes=[Scope.READ.value, Scope.WRITE.value]).secret
    refused = client.post(f"/api/v1/contacts/{rachel.contact_id}/erase", headers={"Authorization": f"Bearer {writer}"})
    assert refused.status_code == 403
    assert client.post(f"/api/v1/contacts/{uuid4()}/erase", headers=tenant.headers).status_code == 404
    assert client.get(f"/api/v1/erasures/{uuid4()}", headers=tenant.headers).status_code == 404
    assert client.post(f"/api/v1/erasures/{uuid4()}/confirm", headers=tenant.headers).status_code == 404


@pytest.mark.usefixtures("worker", "mailbox")
def test_an_admin_erases_from_the_contact_page_after_confirming_and_an_editor_cannot(
    api_server: Any, make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    tenant = make_tenant("Dasherase")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=2)
    add_staff(tenant.tenant_id, "editor@dasherase.example", UserRole.EDITOR)
    editor = login_http(api_server.base_url, tenant.slug, "editor@dasherase.example")
    editor_page = editor.get(f"/app/contacts/{monica.contact_id}").text
    assert "/erase" not in editor_page
    assert editor.get(f"/app/contacts/{monica.contact_id}/erase").status_code == 403
    refused = editor.post(
        f"/app/contacts/{monica.contact_id}/erase", data={"csrf": csrf_of(editor_page), "confirm": "yes"}
    )
    assert refused.status_code == 403

    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    assert f"/app/contacts/{monica.contact_id}/erase" in owner.get(f"/app/contacts/{monica.contact_id}").text
    confirm = owner.get(f"/app/contacts/{monica.contact_id}/erase")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    unticked = owner.post(f"/app/contacts/{monica.contact_id}/erase", data={"csrf": csrf_of(confirm.text)})
    assert unticked.status_code == 422
    no_csrf = owner.post(f"/app/contacts/{monica.contact_id}/erase", data={"confirm": "yes"})
    assert no_csrf.status_code == 403
    erased = owner.post(
        f"/app/contacts/{monica.contact_id}/erase",
        data={"csrf": csrf_of(confirm.text), "confirm": "yes"},
        follow_redirects=False,
    )
    assert erased.status_code == 303 and erased.headers["location"].startswith("/app/privacy/erasures/")
    status_page = erased.headers["location"]

    def done() -> bool:
        return "done" in owner.get(status_page).text

    wait_until(done, 60, "the erasure to finish", interval=0.2)
    report = owner.get(status_page).text
    assert "visits" in report and "purchases" in report and "Queued conversions cancelled" in report
    assert text_matches(owner_url, tenant.tenant_id, monica.terms) == {}
    with tenant_session(tenant.tenant_id) as session:
        audited = session.execute(text("SELECT actor_email FROM audit_log WHERE action = 'contact.erase'")).all()
    assert [row[0] for row in audited] == [tenant.owner_email]
    contact_page = owner.get(f"/app/contacts/{monica.contact_id}").text
    assert "was erased" in contact_page and "Erase this person" not in contact_page


@pytest.mark.usefixtures("worker", "mailbox")
def test_a_member_asks_to_be_erased_and_the_tenant_confirms_it(
    client: TestClient[Any], api_server: Any, make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    """The person asks from their account page; nothing is erased until the business confirms it (it may
    have a legal reason to keep some data), and then everything is."""
    tenant = make_tenant("Memberasks")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=2)
    with tenant_session(tenant.tenant_id) as session:
        site_id = session.execute(
            text("SELECT membership_site_id FROM members WHERE id = :id"), {"id": monica.member_id}
        ).scalar_one()
    base = f"/s/{tenant.slug}/m/{site_id}"
    client.cookies.set(session_cookie_name(), monica.session_id or "")
    account = client.get(f"{base}/account")
    assert "Ask us to erase my data" in account.text
    asked = client.post(f"{base}/account/erase", data={"csrf": csrf_of(account.text)}, follow_redirects=False)
    assert asked.status_code == 303
    assert "You asked on" in client.get(f"{base}/account").text
    assert text_matches(owner_url, tenant.tenant_id, [monica.email])  # nothing erased yet

    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    privacy_page = owner.get("/app/privacy").text
    (erasure_id,) = re.findall(r"/app/privacy/erasures/([0-9a-f-]{36})/confirm", privacy_page)[:1]
    listed = client.get("/api/v1/erasures?status=awaiting_confirmation", headers=tenant.headers).json()
    assert [e["id"] for e in listed] == [erasure_id] and listed[0]["requested_via"] == "member"
    confirmed = owner.post(
        f"/app/privacy/erasures/{erasure_id}/confirm", data={"csrf": csrf_of(privacy_page)}, follow_redirects=False
    )
    assert confirmed.status_code == 303
    erasure = _erased(client, tenant, erasure_id)
    assert erasure["report"]["requested_by"] == f"member:{monica.member_id}"
    assert erasure["report"]["confirmed_by"].startswith("staff:")
    assert text_matches(owner_url, tenant.tenant_id, monica.terms) == {}
    # Her session ended with the erase: the account page sends the browser to log in.
    assert client.get(f"{base}/account", follow_redirects=False).status_code in (302, 303)
    again = client.post(f"/api/v1/erasures/{erasure_id}/confirm", headers=tenant.headers)
    assert again.status_code == 409


MONTH_MS = 31 * 24 * 3600 * 1000


def _browse(tenant_id: UUID, site_id: UUID, pages: int, months_ago: int) -> UUID:
    """A new browser that viewed ``pages`` pages ``months_ago`` months ago (stored as ingest stores them)."""
    visitor_id = new_id()
    at = int(time.time() * 1000) - months_ago * MONTH_MS
    hits = [Hit(hit_id=uuid4(), ts=at + i, url=f"https://keep.example/{i}", path=f"/{i}") for i in range(pages)]
    envelopes = [Envelope(tenant_id, site_id, visitor_id, at, hits)]
    ensure_partitions_for(envelopes)
    with tenant_session(tenant_id) as session:
        store_envelopes(session, envelopes)
    return visitor_id


def _visits_of(tenant_id: UUID, visitor_ids: list[UUID]) -> dict[str, int]:
    with tenant_session(tenant_id) as session:
        visitors = session.execute(
            text("SELECT count(*) FROM visitors WHERE id = ANY(:ids)"), {"ids": visitor_ids}
        ).scalar_one()
        visits = session.execute(
            text("SELECT count(*) FROM visits WHERE visitor_id = ANY(:ids)"), {"ids": visitor_ids}
        ).scalar_one()
    return {"visitors": int(visitors), "visits": int(visits)}


@pytest.mark.usefixtures("worker")
def test_retention_deletes_idle_anonymous_visitors_with_their_visits_and_keeps_the_rest(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    """A tenant keeps anonymous browsing data no longer than it says (13 months by default): beat's job deletes
    visitors idle past the limit with all their visits, keeps recent and identified ones, and the reports keep
    counting what they counted. Identified contacts' visits go only when the tenant sets a limit for them."""
    tenant = make_tenant("Retainer")
    with tenant_session(tenant.tenant_id) as session:
        site_id = create_site(session, name="Keep", allowed_origins=["https://keep.example"]).id
    idle = [_browse(tenant.tenant_id, site_id, 2, months_ago=14) for _ in range(3)]
    recent = _browse(tenant.tenant_id, site_id, 2, months_ago=0)
    almost = _browse(tenant.tenant_id, site_id, 1, months_ago=12)
    known = _browse(tenant.tenant_id, site_id, 2, months_ago=14)
    with tenant_session(tenant.tenant_id) as session:
        contact, _ = upsert_by_email(session, ContactChanges(email="known@retainer.example"))
        link_visitor(session, visitor_id=known, contact_id=contact.id, evidence=Evidence.FORM)
        merge_visitor_history(session, known, contact.id)
    counted = rollups(owner_url, tenant.tenant_id)
    assert client.get("/api/v1/privacy/retention", headers=tenant.headers).json()["last_expired_at"] is None

    celery_app.send_task("trailmark.privacy.expire_retention")  # what beat sends every hour
    wait_until(lambda: _visits_of(tenant.tenant_id, idle)["visitors"] == 0, 60, "the idle visitors to expire")

    assert _visits_of(tenant.tenant_id, idle) == {"visitors": 0, "visits": 0}
    assert _visits_of(tenant.tenant_id, [recent, almost]) == {"visitors": 2, "visits": 3}
    assert _visits_of(tenant.tenant_id, [known]) == {"visitors": 1, "visits": 2}
    assert rollups(owner_url, tenant.tenant_id) == counted
    policy = wait_until(
        lambda: (p := client.get("/api/v1/privacy/retention", headers=tenant.headers).json())["last_expired_at"] and p,
        30,
        "the run to be recorded",
    )
    assert policy["anonymous_visitor_months"] == 13 and policy["identified_visit_months"] is None
    assert (policy["last_expired_visitors"], policy["last_expired_visits"]) == (3, 6)

    # In small batches, as the job works: a shorter limit for anonymous ones, and one for identified visits.
    changed = client.put(
        "/api/v1/privacy/retention",
        headers=tenant.headers,
        json={"anonymous_visitor_months": 11, "identified_visit_months": 13},
    )
    assert changed.status_code == 200, changed.text
    assert expire_tenant(tenant.tenant_id, batch=1) == ExpiryResult(visitors=1, visits=3)
    assert _visits_of(tenant.tenant_id, [recent]) == {"visitors": 1, "visits": 2}
    assert _visits_of(tenant.tenant_id, [almost]) == {"visitors": 0, "visits": 0}
    assert _visits_of(tenant.tenant_id, [known]) == {"visitors": 1, "visits": 0}  # the device and contact stay
    assert rollups(owner_url, tenant.tenant_id) == counted


def test_the_retention_policy_is_read_and_set_within_its_bounds(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle], api_server: Any
) -> None:
    tenant = make_tenant("Policy")
    for body in ({"anonymous_visitor_months": 0}, {"anonymous_visitor_months": 121}, {"identified_visit_months": 0}):
        assert client.put("/api/v1/privacy/retention", headers=tenant.headers, json=body).status_code == 422
    owner = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
    screen = owner.get("/app/privacy").text
    assert "deleted 13 months after their last visit" in screen and "kept until the person is erased" in screen
    saved = owner.post(
        "/app/privacy/retention",
        data={"csrf": csrf_of(screen), "anonymous_visitor_months": "6", "identified_visit_months": ""},
        follow_redirects=True,
    )
    assert saved.status_code == 200 and "deleted 6 months after their last visit" in saved.text
    refused = owner.post("/app/privacy/retention", data={"csrf": csrf_of(screen), "anonymous_visitor_months": "0"})
    assert refused.status_code == 422 and "1 to 120" in refused.text
    assert client.get("/api/v1/privacy/retention", headers=tenant.headers).json()["anonymous_visitor_months"] == 6
    add_staff(tenant.tenant_id, "viewer@policy.example", UserRole.VIEWER)
    viewer = login_http(api_server.base_url, tenant.slug, "viewer@policy.example")
    viewer_screen = viewer.get("/app/privacy").text
    assert "Save retention policy" not in viewer_screen
    assert viewer.post("/app/privacy/retention", data={"csrf": csrf_of(viewer_screen)}).status_code == 403


def test_a_laptop_she_shared_stays_with_bob_without_her_history(
    make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    """Monica filled a form on a laptop, then Bob did (the laptop was re-pointed to him). Erasing Monica takes
    what she did there and leaves Bob the laptop, his visits on it and the record that it became his."""
    tenant = make_tenant("Sharedlaptop")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=2, member=False)
    bob = build_person(tenant.tenant_id, first_name="Bob", last_name="Okafor", devices=1, referred_by_partner=False)
    laptop = monica.visitor_ids[1]
    with tenant_session(tenant.tenant_id) as session:
        link_visitor(session, visitor_id=laptop, contact_id=bob.contact_id, evidence=Evidence.FORM)
        site_id = session.execute(text("SELECT site_id FROM visitors WHERE id = :id"), {"id": laptop}).scalar_one()
    now = int(time.time() * 1000)
    bobs_hits = [Hit(hit_id=uuid4(), ts=now + i, url=f"https://shop.example/bob/{i}", path="/bob") for i in range(2)]
    with tenant_session(tenant.tenant_id) as session:
        store_envelopes(session, [Envelope(tenant.tenant_id, site_id, laptop, now, bobs_hits)])
        bob_before = session.execute(
            text("SELECT email, first_name, last_name, phone, custom FROM contacts WHERE id = :id"),
            {"id": bob.contact_id},
        ).one()
        erasure = request_erasure(session, monica.contact_id, via="api", requested_by="test")
    with tenant_session(tenant.tenant_id) as session:
        erase_person(session, erasure.id)

    terms = [monica.email, monica.first_name, monica.last_name, monica.phone, str(monica.visitor_ids[0])]
    assert text_matches(owner_url, tenant.tenant_id, terms) == {}
    with tenant_session(tenant.tenant_id) as session:
        owner_of_laptop = session.execute(
            text("SELECT contact_id FROM visitors WHERE id = :id"), {"id": laptop}
        ).scalar_one()
        left_on_laptop = session.execute(
            text("SELECT contact_id, count(*) FROM visits WHERE visitor_id = :id GROUP BY 1"), {"id": laptop}
        ).all()
        repointed = session.execute(
            text("SELECT visitor_id FROM identity_events WHERE contact_id = :bob AND previous_contact_id = :her"),
            {"bob": bob.contact_id, "her": monica.contact_id},
        ).all()
        bob_after = session.execute(
            text("SELECT email, first_name, last_name, phone, custom FROM contacts WHERE id = :id"),
            {"id": bob.contact_id},
        ).one()
    assert owner_of_laptop == bob.contact_id
    assert [tuple(row) for row in left_on_laptop] == [(bob.contact_id, 2)]
    assert [row[0] for row in repointed] == [laptop]
    assert bob_after == bob_before


def test_an_erase_that_cannot_finish_says_so_and_can_be_asked_again(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    """The erase is one transaction: when it fails for good nothing is erased, and the status says failed (with
    only the error's kind: its message could quote the person) instead of staying queued."""
    tenant = make_tenant("Failing")
    rachel = build_person(tenant.tenant_id, first_name="Rachel", last_name="Green", devices=1, member=False)
    with tenant_session(tenant.tenant_id) as session:
        erasure = request_erasure(session, rachel.contact_id, via="api", requested_by="test")
    record_failure(tenant.tenant_id, erasure.id, ValueError(f"could not erase {rachel.email}"))
    status = client.get(f"/api/v1/erasures/{erasure.id}", headers=tenant.headers).json()
    assert status["status"] == "failed" and status["report"]["failed"] == "ValueError"
    assert rachel.email not in json.dumps(status)
    again = client.post(f"/api/v1/contacts/{rachel.contact_id}/erase", headers=tenant.headers)
    assert again.status_code == 202 and again.json()["id"] != str(erasure.id)


def test_a_table_added_later_is_exported_and_erased_without_a_change_to_either(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle], owner_url: str
) -> None:
    """Which tables hold a person is read from the catalog: a new table that names contacts is in the export and
    is erased, though no code lists it."""
    from tenants.isolation.migrate import APP_GROUP_ROLE

    tenant = make_tenant("Latertable")
    monica = build_person(tenant.tenant_id, first_name="Monica", last_name="Zanetti", devices=1, member=False)
    predicate = "tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid"
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(
            """CREATE TABLE later_notes (tenant_id uuid NOT NULL, id uuid NOT NULL, buyer_contact_id uuid,
               note text, PRIMARY KEY (tenant_id, id))"""
        )
        connection.execute("ALTER TABLE later_notes ENABLE ROW LEVEL SECURITY")
        connection.execute("ALTER TABLE later_notes FORCE ROW LEVEL SECURITY")
        connection.execute(
            f"CREATE POLICY tenant_isolation ON later_notes USING ({predicate}) WITH CHECK ({predicate})"
        )
        connection.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON later_notes TO {APP_GROUP_ROLE}")
    try:
        with tenant_session(tenant.tenant_id) as session:
            session.execute(
                text("INSERT INTO later_notes VALUES (:t, :id, :c, :note)"),
                {"t": tenant.tenant_id, "id": uuid4(), "c": monica.contact_id, "note": f"call {monica.email}"},
            )
        exported = _export(client, tenant, monica.contact_id)["tables"]
        assert [row["note"] for row in exported["later_notes"]] == [f"call {monica.email}"]
        with tenant_session(tenant.tenant_id) as session:
            erasure = request_erasure(session, monica.contact_id, via="api", requested_by="test")
        with tenant_session(tenant.tenant_id) as session:
            done = erase_person(session, erasure.id)
        assert done is not None and done.report["deleted"]["later_notes"] == 1
        assert text_matches(owner_url, tenant.tenant_id, monica.terms) == {}
    finally:
        with psycopg.connect(owner_url, autocommit=True) as connection:
            connection.execute("DROP TABLE later_notes")


def test_two_requests_at_once_for_one_person_make_one_erasure(make_tenant: Callable[..., TenantHandle]) -> None:
    """A double click, or the API and the dashboard at the same moment: one erasure, which both are told of."""
    from concurrent.futures import ThreadPoolExecutor

    tenant = make_tenant("Doubleclick")
    rachel = build_person(tenant.tenant_id, first_name="Rachel", last_name="Green", devices=1, member=False)

    def ask(via: str) -> UUID:
        with tenant_session(tenant.tenant_id) as session:
            return request_erasure(session, rachel.contact_id, via=via, requested_by=via).id

    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(ask, ["api", "dashboard", "api", "dashboard"]))
    assert len(ids) == 1


def test_the_catalog_names_the_columns_that_refer_to_people(make_tenant: Callable[..., TenantHandle]) -> None:
    """Every reference the export, erase and retention follow is a person's column, never the tenant's key."""
    from tenants.privacy.catalog import person_tables

    with tenant_session(make_tenant("Catalog").tenant_id) as session:
        tables = {t.name: t for t in person_tables(session)}
    assert tables["visitors"].contact_columns == ("contact_id",) and tables["visitors"].visitor_columns == ("id",)
    assert tables["visits"].contact_columns == ("contact_id",) and tables["visits"].visitor_columns == ("visitor_id",)
    assert tables["identity_events"].contact_columns == ("contact_id", "previous_contact_id")
    assert tables["referral_clicks"].visitor_columns == ("visitor_id",)
    assert all("tenant_id" not in (*t.contact_columns, *t.visitor_columns) for t in tables.values())
