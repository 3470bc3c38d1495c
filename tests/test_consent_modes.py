"""Analytics consent modes per site (issue 13): how a site asks, and what collect keeps for each browser."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.conftest import SiteHandle, TenantHandle, make_site, token_after, wait_stored
from tests.support.conversions import ORIGIN
from tests.support.partners import collect, hit


def test_a_sites_consent_mode_is_none_by_default_settable_and_validated(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Modes")
    plain = client.post("/api/v1/sites", json={"name": "Shop", "allowed_origins": [ORIGIN]}, headers=tenant.headers)
    assert plain.status_code == 201 and plain.json()["consent_mode"] == "none"
    changed = client.patch(
        f"/api/v1/sites/{plain.json()['id']}", json={"consent_mode": "opt_in"}, headers=tenant.headers
    )
    assert changed.status_code == 200 and changed.json()["consent_mode"] == "opt_in"
    assert client.get(f"/api/v1/sites/{plain.json()['id']}", headers=tenant.headers).json()["consent_mode"] == "opt_in"
    wrong = client.post(
        "/api/v1/sites",
        json={"name": "Shop", "allowed_origins": [ORIGIN], "consent_mode": "maybe"},
        headers=tenant.headers,
    )
    assert wrong.status_code in (400, 422) and "consent_mode" in wrong.text


def _consent(client: Any, site: SiteHandle, **answer: Any) -> Any:
    return client.post(
        f"/t/{site.site_key}/consent",
        content=json.dumps(answer),
        headers={"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"},
    )


def _visits(tenant: TenantHandle) -> list[str]:
    with tenant_session(tenant.tenant_id) as session:
        return [str(hit_id) for hit_id in session.execute(text("SELECT hit_id FROM visits")).scalars()]


def _visitor_rows(tenant: TenantHandle) -> int:
    with tenant_session(tenant.tenant_id) as session:
        return int(session.execute(text("SELECT count(*) FROM visitors")).scalar() or 0)


@pytest.mark.usefixtures("pipeline")
def test_an_opt_in_site_keeps_nothing_of_a_browser_until_it_consents_and_forgets_it_when_it_withdraws(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Optin")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_in")

    before = collect(client, site, hit("/?utm_source=news"))
    assert before.status_code == 202 and "token" not in before.json(), "no token before consent"

    granted = _consent(client, site, analytics=True)
    assert granted.status_code == 200, granted.text
    assert granted.json()["analytics"] is True and granted.json()["analytics_changed_at"]
    token = granted.json()["token"]
    landing = hit("/?utm_source=news")
    assert collect(client, site, landing, token=token).status_code == 202
    wait_stored(tenant.tenant_id, 1)
    assert _visits(tenant) == [landing["hit_id"]], "the hit before consent was stored"
    assert _visitor_rows(tenant) == 1

    withdrawn = _consent(client, site, analytics=False, token=token)
    assert withdrawn.status_code == 200 and withdrawn.json()["forgotten"] is True
    assert _visits(tenant) == [] and _visitor_rows(tenant) == 0
    after = collect(client, site, hit("/later"), token=token)
    assert after.status_code == 202 and after.json() == {"accepted": 0}
    with tenant_session(tenant.tenant_id) as session:
        row = session.execute(text("SELECT analytics, analytics_source FROM visitor_consents")).one()
    assert tuple(row) == (False, "tracker"), "the withdrawal is recorded"


@pytest.mark.usefixtures("pipeline")
def test_an_opt_out_site_tracks_until_the_visitor_refuses(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Optout")
    site = make_site(tenant, [ORIGIN], consent_mode="opt_out")
    token = token_after(collect(client, site, hit("/")), None)
    wait_stored(tenant.tenant_id, 1)

    assert _consent(client, site, analytics=False, token=token).json()["forgotten"] is True
    assert _visits(tenant) == []
    assert collect(client, site, hit("/again"), token=token).json() == {"accepted": 0}


def test_a_consent_call_without_an_answer_is_refused_with_a_reason(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    site = make_site(make_tenant("Blank"), [ORIGIN], consent_mode="opt_in")
    answer = _consent(client, site)
    assert answer.status_code == 400 and "analytics" in answer.json()["detail"]
    refused_unknown = _consent(client, site, analytics=False)
    assert refused_unknown.status_code == 422


def test_the_visitor_cookie_lives_as_long_as_the_tenant_keeps_an_anonymous_visitor(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    from tenants.privacy.retention import set_policy
    from tenants.tracking.sites import forget_site

    tenant = make_tenant("Cookies")
    site = make_site(tenant, [ORIGIN])
    assert '"cookieAge": 34128000' in client.get(f"/t/{site.site_key}.js").text  # 13 months: 395 days
    with tenant_session(tenant.tenant_id) as session:
        set_policy(session, anonymous_visitor_months=2, identified_visit_months=None)
    forget_site(site.site_key)
    assert '"cookieAge": 5184000' in client.get(f"/t/{site.site_key}.js").text  # 60 days
    with tenant_session(tenant.tenant_id) as session:
        set_policy(session, anonymous_visitor_months=24, identified_visit_months=None)
    forget_site(site.site_key)
    assert '"cookieAge": 34560000' in client.get(f"/t/{site.site_key}.js").text  # capped at 400 days
