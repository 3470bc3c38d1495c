"""The OpenAPI schema is the API's contract: tenants generate clients from it and fuzzers trust it.

Schemathesis runs every check it has against the real API process on the test database: each operation
through its coverage and fuzzing phases, then the stateful phase that chains create → get/change/delete
through the schema's links. Every exclusion is written down here with its reason.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import settings
from schemathesis.config import SchemathesisConfig

from tests.conftest import LiveServer, TenantHandle

CONTRACT_EXAMPLES = 25
"""Fuzzed examples per operation: the whole file stays within about three minutes on two cores."""

STORED_DATA_RULES = {
    # These operations refuse with 422 what no schema can know: whether an id or key the body names
    # exists in the tenant (a site, form, membership site or custom field), or a rule across items
    # (exactly one form field maps to email, and it is required; a block's HTML has no javascript: URL).
    # Their positive examples may therefore get 422; every other operation must accept schema-valid data.
    "POST /api/v1/forms",
    "PATCH /api/v1/forms/{form_id}",
    "POST /api/v1/pages",
    "PATCH /api/v1/pages/{page_id}",
    "POST /api/v1/links/bulk",
    "POST /api/v1/contacts",
    "PATCH /api/v1/contacts/{contact_id}",
    "POST /api/v1/links",
}


def _config(api_key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {api_key}"},
            "generation": {
                "max-examples": CONTRACT_EXAMPLES,
                # NUL and lone surrogates cannot be stored as PostgreSQL text; the API refuses them at its
                # edge (400/422 naming the field) for every string, a rule the schema cannot carry on each
                # string without replacing the patterns that fields already have.
                "allow-x00": False,
                "codec": "utf-8",
            },
            "phases": {"examples": {"enabled": False}},
            "checks": {"enabled": True},
            "operations": [
                {
                    "include-name": sorted(STORED_DATA_RULES),
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}
                    },
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def contract_tenant() -> TenantHandle:
    from tenants.accounts.service import signup

    result = signup(name="Contract", owner_email="owner@contract.example", password="correct horse battery")
    return TenantHandle(result.tenant.id, result.tenant.slug, result.api_key.secret)


@pytest.fixture(scope="module")
def api_schema(api_server: LiveServer, contract_tenant: TenantHandle) -> Any:
    return schemathesis.openapi.from_url(
        f"{api_server.base_url}/api/schema/openapi.json", config=_config(contract_tenant.api_key)
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None)
def test_every_operation_answers_as_its_schema_says(case: Any) -> None:
    """Coverage and fuzzing per operation, with every check: no server error, only documented statuses,
    content types, headers and bodies, schema-valid requests accepted, invalid ones refused."""
    case.call_and_validate()


def test_operations_chained_through_their_links_keep_the_contract(api_schema: Any) -> None:
    """The stateful phase: resources created through the API are read, changed and deleted through the
    links the schema documents, and stay consistent (a deleted resource is gone, a created one is there)."""
    state_machine = api_schema.as_state_machine()
    state_machine.run(settings=settings(max_examples=15, stateful_step_count=6, deadline=None))
