"""Analytics consent modes per site (issue 13): how a site asks, and what collect keeps for each browser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import TenantHandle
from tests.support.conversions import ORIGIN


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
