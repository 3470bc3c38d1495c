"""The visitors and visits lists answer the same rows on the REST API as on the dashboard for the same address:
identified or anonymous visitors, their first or last touch's channel, source, medium, campaign or partner, and a
visit's own dimensions and days — and a value that cannot be a filter is refused with the reason, not ignored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.reports.dimensions import touch_dimension_sql, visit_dimension_sql
from tests.conftest import LiveServer, TenantHandle
from tests.support.dashboard import login_http
from tests.support.reports import BASE, SIGNED_UP, SeededReports, seed_reports

_VISITOR_LINK = re.compile(r'<a href="/app/visitors/([0-9a-f-]{36})">')
_VISIT_ROW = re.compile(r'<tr class="visit"><td>([^<]+)</td><td>([^<]*)</td>')


@dataclass
class Lists:
    seeded: SeededReports
    api: httpx.Client
    staff: httpx.Client


@pytest.fixture(scope="module")
def lists(api_server: LiveServer, pipeline: None) -> Iterator[Lists]:
    from tenants.accounts.service import signup

    result = signup(name="Listings", owner_email="owner@listings.example", password="correct horse battery")
    tenant = TenantHandle(result.tenant.id, result.tenant.slug, result.api_key.secret, "owner@listings.example")
    with httpx.Client(base_url=api_server.base_url, timeout=30, headers=tenant.headers) as api:
        seeded = seed_reports(api, tenant)
        staff = login_http(api_server.base_url, tenant.slug, tenant.owner_email)
        yield Lists(seeded, api, staff)
        staff.close()


def _api_visitors(lists: Lists, params: dict[str, str]) -> set[str]:
    answer = lists.api.get("/api/v1/visitors", params={**params, "limit": "500"})
    assert answer.status_code == 200, (params, answer.text)
    return {item["id"] for item in answer.json()["items"]}


def _screen_visitors(lists: Lists, params: dict[str, str]) -> set[str]:
    answer = lists.staff.get("/app/visitors", params=params)
    assert answer.status_code == 200, (params, answer.text)
    return set(_VISITOR_LINK.findall(answer.text))


def _scanned_visitors(tenant: TenantHandle, where: str, touch: str = "first", **values: str) -> set[str]:
    dims = touch_dimension_sql(f"visitors.{touch}_touch")
    clauses = [where, *(f"{dims[name]} = :{name}" for name in values)]
    statement = f"SELECT id FROM visitors WHERE {' AND '.join(clauses)}"
    with tenant_session(tenant.tenant_id) as session:
        return {str(row[0]) for row in session.execute(text(statement), values)}


def _api_visits(lists: Lists, params: dict[str, str]) -> list[tuple[str, str]]:
    answer = lists.api.get("/api/v1/visits", params={**params, "limit": "500"})
    assert answer.status_code == 200, (params, answer.text)
    return [(item["occurred_at"][:19].replace("T", " "), item["path"]) for item in answer.json()["items"]]


def _screen_visits(lists: Lists, params: dict[str, str]) -> list[tuple[str, str]]:
    answer = lists.staff.get("/app/visits", params=params)
    assert answer.status_code == 200, (params, answer.text)
    return _VISIT_ROW.findall(answer.text)


def _scanned_visits(tenant: TenantHandle, where: str, **values: str) -> list[tuple[str, str]]:
    dims = visit_dimension_sql("visits")
    clauses = [where, *(f"{dims[name]} = :{name}" for name in values)]
    statement = f"""SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), path FROM visits
        WHERE {" AND ".join(clauses)} ORDER BY occurred_at DESC, hit_id DESC"""
    with tenant_session(tenant.tenant_id) as session:
        return [(row[0], row[1]) for row in session.execute(text(statement), values)]


def test_the_visitors_list_filters_alike_on_the_api_and_the_dashboard(lists: Lists) -> None:
    """A marketer's filtered list and an integration reading the API see the same people."""
    tenant = lists.seeded.tenant
    cases: list[tuple[dict[str, str], set[str]]] = [
        ({"identified": "true"}, _scanned_visitors(tenant, "contact_id IS NOT NULL AND NOT is_bot")),
        ({"identified": "false"}, _scanned_visitors(tenant, "contact_id IS NULL AND NOT is_bot")),
        ({"channel": "Email"}, _scanned_visitors(tenant, "NOT is_bot", channel="Email")),
        (
            {"touch": "last", "source": "newsletter", "identified": "true"},
            _scanned_visitors(tenant, "contact_id IS NOT NULL AND NOT is_bot", "last", source="newsletter"),
        ),
        ({"partner": "ACME"}, _scanned_visitors(tenant, "NOT is_bot", partner="ACME")),
        ({"is_bot": "true"}, _scanned_visitors(tenant, "is_bot")),
        ({"is_bot": "any", "site_id": str(lists.seeded.site.site_id)}, _scanned_visitors(tenant, "true")),
    ]
    for params, expected in cases:
        api_params = params if "is_bot" in params else {**params, "is_bot": "false"}
        assert _api_visitors(lists, api_params) == expected, params
        assert _screen_visitors(lists, params) == expected, params
    assert len(cases[0][1]) == len(SIGNED_UP), "every browser that filled in the form is identified"
    assert cases[2][1] and cases[2][1] < cases[-1][1], "the channel filter keeps some visitors, not all"


def test_the_visit_log_filters_alike_on_the_api_and_the_dashboard(lists: Lists) -> None:
    tenant = lists.seeded.tenant
    day = (BASE + timedelta(days=3)).date().isoformat()
    cases: list[tuple[dict[str, str], list[tuple[str, str]]]] = [
        ({"channel": "Email"}, _scanned_visits(tenant, "NOT is_bot", channel="Email")),
        ({"source": "google.com"}, _scanned_visits(tenant, "NOT is_bot", source="google.com")),
        ({"campaign": "launch"}, _scanned_visits(tenant, "NOT is_bot", campaign="launch")),
        (
            {"from": day, "to": day},
            _scanned_visits(tenant, f"NOT is_bot AND (occurred_at AT TIME ZONE 'UTC')::date = '{day}'"),
        ),
        ({"bot": "true"}, _scanned_visits(tenant, "is_bot")),
    ]
    for params, expected in cases:
        assert expected, params
        api_params = params if "bot" in params else {**params, "bot": "false"}
        assert _api_visits(lists, api_params) == expected, params
        assert _screen_visits(lists, params) == expected, params


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("visitors", {"identified": "maybe"}, "identified"),
        ("visitors", {"touch": "middle"}, "touch"),
        ("visitors", {"is_bot": "sometimes"}, "is_bot"),
        ("visitors", {"channel": "x" * 201}, "channel"),
        ("visitors", {"site_id": "not-an-id"}, "site_id"),
        ("visits", {"from": "2026-13-01"}, "from"),
        ("visits", {"to": "yesterday"}, "to"),
        ("visits", {"bot": "sometimes"}, "bot"),
        ("visits", {"source": "y" * 201}, "source"),
    ],
)
def test_a_filter_value_that_cannot_be_read_is_refused_with_the_reason(
    lists: Lists, path: str, params: dict[str, str], field: str
) -> None:
    answer = lists.api.get(f"/api/v1/{path}", params=params)
    assert answer.status_code == 400, answer.text
    assert field in [error["field"] for error in answer.json()["errors"]], answer.text
    screen = lists.staff.get(f"/app/{path}", params=params)
    assert screen.status_code in (400, 422), screen.text
    assert field.replace("_", " ") in screen.text or field in screen.text


def test_the_list_filters_are_in_the_openapi_schema(lists: Lists) -> None:
    schema = lists.api.get("/api/schema/openapi.json").json()

    def parameters(path: str) -> dict[str, Any]:
        return {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}

    visitors, visits = parameters("/api/v1/visitors"), parameters("/api/v1/visits")
    assert {"identified", "touch", "channel", "source", "medium", "campaign", "partner", "is_bot"} <= set(visitors)
    assert {"from", "to", "channel", "source", "medium", "campaign", "partner", "bot"} <= set(visits)
    for operation in (schema["paths"]["/api/v1/visitors"]["get"], schema["paths"]["/api/v1/visits"]["get"]):
        assert {"400", "422"} <= set(operation["responses"])
