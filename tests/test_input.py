"""No input crashes the server: text PostgreSQL cannot store (U+0000, unpaired surrogates) is refused at
every entry point with a 400 that names the field, and nothing a tenant's API call or a visitor's form
sends can turn into a 500."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import SiteHandle, TenantHandle, make_site

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"


@pytest.fixture
def tenant(make_tenant: Callable[..., TenantHandle]) -> TenantHandle:
    return make_tenant("Inputs")


def refused_form_page(response: Any) -> str:
    """The text of the page a browser's refused form gets: a 400 HTML page, not a JSON problem."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "cannot be stored" in response.text
    return str(response.text)


def refused_fields(response: Any) -> list[str]:
    """The fields a refusal names, after checking it is the documented 400 problem."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 400
    assert "cannot be stored" in body["detail"]
    assert all("U+0000" in error["message"] for error in body["errors"])
    return [error["field"] for error in body["errors"]]


def post_contact(client: TestClient[Any], tenant: TenantHandle, body: str) -> Any:
    """``body`` sent as it is written (escapes and all) to create a contact."""
    return client.post("/api/v1/contacts", content=body, headers={**tenant.headers, "Content-Type": "application/json"})


def contacts(client: TestClient[Any], tenant: TenantHandle) -> list[dict[str, Any]]:
    response = client.get("/api/v1/contacts", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_a_nul_in_a_query_parameter_is_refused_naming_it(client: TestClient[Any], tenant: TenantHandle) -> None:
    assert refused_fields(client.get("/api/v1/contacts?q=a%00b", headers=tenant.headers)) == ["q"]
    assert refused_fields(client.get("/api/v1/visits?utm_source=a%00b", headers=tenant.headers)) == ["utm_source"]
    # The same searches without the NUL work: only the unstorable character is refused.
    assert client.get("/api/v1/contacts?q=ab", headers=tenant.headers).status_code == 200
    assert client.get("/api/v1/visits?utm_source=ab", headers=tenant.headers).status_code == 200


def test_a_nul_in_a_json_body_is_refused_naming_the_field(client: TestClient[Any], tenant: TenantHandle) -> None:
    create = '{"email": "ann@example.com", "first_name": "An\\u0000n"}'
    response = post_contact(client, tenant, create)
    assert refused_fields(response) == ["first_name"]
    nested = '{"email": "ann@example.com", "custom": {"plan": ["gold", "x\\u0000"]}}'
    response = post_contact(client, tenant, nested)
    assert refused_fields(response) == ["custom.plan[1]"]
    assert contacts(client, tenant) == []  # nothing half-written
    # An unpaired surrogate (half an emoji) cannot even be encoded as UTF-8.
    lone = '{"email": "ann@example.com", "last_name": "An\\ud83dn"}'
    response = post_contact(client, tenant, lone)
    assert refused_fields(response) == ["last_name"]
    # An escaped backslash followed by "u0000" is ordinary text and is stored as it is.
    literal = '{"email": "ann@example.com", "first_name": "An\\\\u0000n"}'
    response = post_contact(client, tenant, literal)
    assert response.status_code == 201, response.text
    assert response.json()["first_name"] == "An\\u0000n"


def test_a_nul_in_a_path_parameter_is_refused_naming_it(client: TestClient[Any], tenant: TenantHandle) -> None:
    assert refused_fields(client.get("/f/form%00key")) == ["form_key"]
    assert refused_fields(client.get(f"/s/{tenant.slug}/home%00page")) == ["page_slug"]
    assert refused_fields(client.get("/t/site%00key.js")) == ["script"]
    # Collect is a plain ASGI handler that reads its own body, but its path is checked all the same.
    assert refused_fields(client.post("/collect/site%00key", content=b"{}")) == ["path"]


def test_a_nul_in_a_public_form_field_is_refused_and_stores_nothing(
    client: TestClient[Any], tenant: TenantHandle
) -> None:
    site = make_site(tenant, [ORIGIN])
    fields = [
        {"name": "email", "maps_to": "email", "type": "email"},
        {"name": "first_name", "maps_to": "first_name"},
    ]
    form = client.post(
        "/api/v1/forms",
        json={"site_id": str(site.site_id), "name": "Newsletter", "fields": fields, "min_fill_seconds": 0},
        headers=tenant.headers,
    ).json()
    headers = {"Origin": ORIGIN, "User-Agent": BROWSER}
    posted = client.post(
        f"/f/{form['form_key']}", data={"email": "bo@example.com", "first_name": "B\x00o"}, headers=headers
    )
    assert "The field first_name holds" in refused_form_page(posted)
    asked_for_json = client.post(
        f"/f/{form['form_key']}",
        data={"email": "bo@example.com", "first_name": "B\x00o"},
        headers={**headers, "Accept": "application/json"},
    )
    assert refused_fields(asked_for_json) == ["first_name"]
    as_json = client.post(
        f"/f/{form['form_key']}",
        content='{"email": "bo@example.com", "first_name": "B\\u0000o"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert refused_fields(as_json) == ["first_name"]
    assert contacts(client, tenant) == []


def test_a_nul_in_a_membership_form_field_is_refused(client: TestClient[Any], tenant: TenantHandle) -> None:
    site = client.post(
        "/api/v1/membership-sites", json={"name": "Club", "registration": "open"}, headers=tenant.headers
    ).json()
    base = f"/s/{tenant.slug}/m/{site['id']}"
    page = client.get(f"{base}/register")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    data = {"csrf": match.group(1), "email": "cy@example.com", "first_name": "C\x00y", "password": "long enough pass"}
    registered = refused_form_page(client.post(f"{base}/register", data=data, follow_redirects=False))
    assert "The field first_name holds" in registered
    login = {"csrf": match.group(1), "email": "cy\x00@example.com", "password": "long enough pass"}
    assert "The field email holds" in refused_form_page(
        client.post(f"{base}/login", data=login, follow_redirects=False)
    )
    assert contacts(client, tenant) == []


def test_a_nul_in_a_link_code_exchange_is_refused(client: TestClient[Any], tenant: TenantHandle) -> None:
    site: SiteHandle = make_site(tenant, [ORIGIN])
    response = client.post(
        f"/t/{site.site_key}/exchange",
        content='{"code": "abc\\u0000", "token": null}',
        headers={"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert refused_fields(response) == ["code"]


def test_deeply_nested_json_is_refused_not_a_server_error(client: TestClient[Any], tenant: TenantHandle) -> None:
    """A few kilobytes of nested brackets (with or without escapes) get a 400 from every JSON route,
    including signup, which needs no key: no route answers 500 from a recursion limit."""
    for depth in (40, 600, 950, 5000):
        for leaf in ("1", '"\\u0041"'):
            nested = "[" * depth + leaf + "]" * depth
            for path, headers in (("/api/v1/signup", {}), ("/api/v1/contacts", tenant.headers)):
                body = '{"email": "deep@example.com", "first_name": ' + nested + "}"
                response = client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
                assert response.status_code == 400, (path, depth, response.text)
