"""A person's rights over their data: a tenant can hand a person everything it holds about them (export), and
erase them everywhere while keeping the bookkeeping the law requires; and anonymous data is kept no longer than
the tenant's policy says. Completeness is checked against the database catalog, so a table added later is
covered, or the suite fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

from litestar.testing import TestClient
from sqlalchemy import text

from api.cookies import session_cookie_name
from tenants.isolation import tenant_session
from tenants.models import Scope, UserRole
from tests.conftest import TenantHandle
from tests.support.dashboard import add_staff, login_http
from tests.support.privacy import build_person, rows_with_uuids


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
