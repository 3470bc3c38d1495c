"""Sign-up and API keys over the REST API, and what bad input gets back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.conftest import TenantHandle

SIGNUP = {"name": "Monica's Shop", "owner_email": "Monica@Example.COM", "password": "a long enough secret"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count_tenants(owner_url: str, slug_like: str) -> int:
    with psycopg.connect(owner_url) as connection:
        row = connection.execute("SELECT count(*) FROM tenants WHERE slug LIKE %s", (slug_like,)).fetchone()
    assert row is not None
    return int(row[0])


def test_signup_returns_a_working_key_shown_once(client: TestClient[Any]) -> None:
    response = client.post("/api/v1/signup", json={**SIGNUP, "slug": "monicas-shop"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["tenant"]["slug"] == "monicas-shop"
    assert body["owner"]["email"] == "Monica@example.com"
    key = body["api_key"]["key"]
    assert key.startswith("tm_") and set(body["api_key"]["scopes"]) == {"read", "write", "admin"}

    tenant = client.get("/api/v1/tenant", headers=bearer(key))
    assert tenant.status_code == 200
    assert tenant.json()["name"] == "Monica's Shop"
    listed = client.get("/api/v1/api-keys", headers=bearer(key)).json()
    assert [k["prefix"] for k in listed] == [body["api_key"]["prefix"]]
    assert "key" not in listed[0]
    assert listed[0]["last_used_at"] is not None


def test_slug_collision_is_409_and_derived_slugs_get_a_suffix(client: TestClient[Any], owner_url: str) -> None:
    first = client.post("/api/v1/signup", json={**SIGNUP, "name": "Kilo", "slug": "kilo"})
    assert first.status_code == 201
    taken = client.post("/api/v1/signup", json={**SIGNUP, "name": "Kilo", "slug": "kilo"})
    assert taken.status_code == 409
    assert "taken" in taken.json()["detail"]
    derived = client.post("/api/v1/signup", json={**SIGNUP, "name": "Kilo"})
    assert derived.status_code == 201
    assert derived.json()["tenant"]["slug"].startswith("kilo-")
    assert count_tenants(owner_url, "kilo%") == 2


def test_create_use_and_revoke_a_key(client: TestClient[Any], make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Lima")
    created = client.post("/api/v1/api-keys", json={"name": "reporting", "scopes": ["read"]}, headers=tenant.headers)
    assert created.status_code == 201, created.text
    reporting = created.json()
    assert client.get("/api/v1/tenant", headers=bearer(reporting["key"])).status_code == 200
    # A read-only key cannot manage keys, nor mint a stronger one.
    assert client.get("/api/v1/api-keys", headers=bearer(reporting["key"])).status_code == 403
    escalate = client.post(
        "/api/v1/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=bearer(reporting["key"])
    )
    assert escalate.status_code == 403

    revoked = client.delete(f"/api/v1/api-keys/{reporting['id']}", headers=tenant.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    denied = client.get("/api/v1/tenant", headers=bearer(reporting["key"]))
    assert denied.status_code == 401
    assert denied.headers["content-type"].startswith("application/problem+json")
    assert "revoked" in denied.json()["detail"]
    # The owner's key still works.
    assert client.get("/api/v1/tenant", headers=tenant.headers).status_code == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Basic abc"}, "Bearer"),
        ({"Authorization": "Bearer tm_nothex_secret"}, "malformed"),
        ({"Authorization": "Bearer tm_0123456789abcdef0123456789abcdef_unknownsecret"}, "unknown API key"),
    ],
)
def test_missing_or_unknown_keys_get_401_with_a_reason(
    client: TestClient[Any], headers: dict[str, str], reason: str
) -> None:
    response = client.get("/api/v1/tenant", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == 401 and reason in body["detail"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b'{"name": 5, "owner_email": "a@b.co", "password": "long enough pw"}', 400, "name"),
        (b'{"name": "N", "owner_email": "a@b.co", "password": "long enough pw", "extra": 1}', 400, None),
        (b'{"name": "N", "owner_email": "not-an-email", "password": "long enough pw"}', 422, "owner_email"),
        (b'{"name": "N", "owner_email": "a@b.co", "password": "short"}', 422, "password"),
        (
            b'{"name": "N", "owner_email": "a@b.co", "password": "long enough pw", "slug": "Bad Slug"}',
            422,
            "slug",
        ),
        (b'{"name": "", "owner_email": "a@b.co", "password": "long enough pw"}', 422, "name"),
    ],
)
def test_bad_signups_get_4xx_with_a_reason_and_write_nothing(
    client: TestClient[Any], owner_url: str, body: bytes, status: int, field: str | None
) -> None:
    before = count_tenants(owner_url, "%")
    response = client.post("/api/v1/signup", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["status"] == status and problem["detail"]
    if field:
        assert field in {e["field"] for e in problem["errors"]}
    assert count_tenants(owner_url, "%") == before


def test_oversized_body_is_413(client: TestClient[Any]) -> None:
    huge = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = client.post("/api/v1/signup", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_unknown_route_and_bad_id_are_problem_json(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Mike")
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad_id = client.delete("/api/v1/api-keys/not-a-uuid", headers=tenant.headers)
    assert bad_id.status_code in (400, 404)
    unknown = client.delete("/api/v1/api-keys/01a21970-fab5-7aa3-af5a-a530d94bb722", headers=tenant.headers)
    assert unknown.status_code == 404


def test_openapi_schema_is_served(client: TestClient[Any]) -> None:
    schema = client.get("/api/schema/openapi.json").json()
    assert "/api/v1/signup" in schema["paths"]
    assert "/api/v1/api-keys/{key_id}" in schema["paths"]


def test_health_and_ready(client: TestClient[Any]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}
