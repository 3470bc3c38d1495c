"""The OpenAPI schema is the API's contract: tenants generate clients from it and fuzzers trust it.

Schemathesis runs every check it has against the real API process on the test database: each operation
through its coverage and fuzzing phases, then the stateful phase that chains create → get/change/delete
through the schema's links. Every exclusion is written down here with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
import schemathesis.engine
from hypothesis import settings
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from tenants.embedded import free_port
from tests.conftest import LiveServer, start_api_server

CONTRACT_EXAMPLES = 25
"""Fuzzed examples per operation: the whole file stays within about three minutes on two cores."""

RULES_ONLY_SERVICES_KNOW = {
    # These operations refuse with 422 what no schema can know, so their schema-valid examples may get 422:
    # whether an id or key the body names exists in the tenant (a site, form, membership site, contact or
    # custom field), a rule across items (exactly one form field maps to email, and it is required; no
    # javascript: URL inside a block's HTML), a time that must be in the future, merging a contact into
    # itself, or a cursor that must be one the API returned. Every other operation must accept every
    # schema-valid request.
    "POST /api/v1/forms",
    "PATCH /api/v1/forms/{form_id}",
    "POST /api/v1/pages",
    "PATCH /api/v1/pages/{page_id}",
    "POST /api/v1/links",
    "POST /api/v1/links/bulk",
    "POST /api/v1/contacts",
    "PATCH /api/v1/contacts/{contact_id}",
    "POST /api/v1/contacts/{contact_id}/merge",
    "GET /api/v1/contacts",
    "GET /api/v1/visitors",
    "GET /api/v1/visits",
}
LENIENT_DATE_TIME = "GET /api/v1/visits"
"""Litestar also reads a number as a Unix timestamp in a date-time query parameter (``until=0.5``): the API
accepts more than the schema promises there, which breaks no client; only ``negative_data_rejection`` is
off for this operation."""


CONTRACT_PORT = free_port()


def _contract_key() -> str:
    """A tenant of the contract's own, signed up through the service the API uses."""
    from tenants.accounts.service import signup

    return signup(
        name="Contract", owner_email="owner@contract.example", password="correct horse battery"
    ).api_key.secret


# Known before collection, as on schemathesis' command line (`--url`, `-H`): the checks that drop or
# alter the key must know which header carries it.
_CONTRACT_KEY = _contract_key()


def _config(phases: dict[str, Any]) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "phases": phases,
            "base-url": f"http://127.0.0.1:{CONTRACT_PORT}",
            "headers": {"Authorization": f"Bearer {_CONTRACT_KEY}"},
            # Every run starts from the schema alone: no failures replayed from an earlier run's cache.
            "cache": {"enabled": False},
            "generation": {
                "max-examples": CONTRACT_EXAMPLES,
                # NUL and lone surrogates cannot be stored as PostgreSQL text; the API refuses them at its
                # edge (400/422 naming the field) for every string, a rule the schema cannot carry on each
                # string without replacing the patterns that fields already have.
                "allow-x00": False,
                "codec": "utf-8",
            },
            "checks": {
                "enabled": True,
                # Litestar 2 answers OPTIONS itself and, on a path whose methods come from several handlers,
                # lists only some of them in Allow (litestar-org/litestar#4169, fixed in Litestar 3).
                "allow_header_conformance": {"enabled": False},
                # A body over the API's 1 MiB limit (say 10,001 links) is refused whole with 413 before it is
                # read: a rejection like 400 and 422, documented on every operation with a body.
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
                },
            },
            "operations": [
                {
                    "include-name": sorted(RULES_ONLY_SERVICES_KNOW),
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}
                    },
                },
                {"include-name": LENIENT_DATE_TIME, "checks": {"negative_data_rejection": {"enabled": False}}},
            ],
        }
    )


def _served_schema() -> dict[str, Any]:
    """The schema the app serves at /api/schema/openapi.json (built in-process: schemathesis parametrizes
    the tests at collection, before any API process runs)."""
    from api.app import create_app

    return create_app().openapi_schema.to_schema()


schema = schemathesis.openapi.from_dict(_served_schema(), config=_config({"examples": {"enabled": False}}))


@pytest.fixture(scope="module")
def contract_api() -> Iterator[LiveServer]:
    """The real API process on the test database, at the address the schema's config names."""
    server = start_api_server(port=CONTRACT_PORT)
    yield server
    server.stop()


def test_the_served_schema_is_the_one_tested(contract_api: LiveServer) -> None:
    """Clients generate from the schema the API process serves; it is the one the checks below use."""
    served = httpx.get(f"{contract_api.base_url}/api/schema/openapi.json", timeout=10).json()
    assert served == _served_schema()


def _enum(served: dict[str, Any], component: str, field: str) -> set[str]:
    node = served["components"]["schemas"][component]["properties"][field]
    for option in (node, *node.get("oneOf", []), *node.get("allOf", [])):
        candidate = served["components"]["schemas"][option["$ref"].rsplit("/", 1)[1]] if "$ref" in option else option
        if "enum" in candidate:
            return set(candidate["enum"])
        if "const" in candidate:
            return {candidate["const"]}
    raise AssertionError(f"{component}.{field} lists no values")


def test_the_schema_lists_the_values_the_services_accept() -> None:
    """A generated client offers exactly the values the API takes: no more (refused), no fewer (unusable)."""
    from tenants.forms.service import FIELD_TYPES
    from tenants.models import FieldType, Scope
    from tenants.pages.service import BLOCK_KINDS, LEVELS

    served = _served_schema()
    assert _enum(served, "FormField", "type") == set(FIELD_TYPES)
    assert _enum(served, "ContactFieldCreate", "type") == {t.value for t in FieldType}
    assert _enum(served, "PageCreate", "access_level") == set(LEVELS)
    assert {_enum(served, kind, "kind").pop() for kind in ("HtmlBlock", "FormBlock", "LinkBlock")} == set(BLOCK_KINDS)
    assert set(served["components"]["schemas"]["Scope"]["enum"]) == {scope.value for scope in Scope}
    assert set(served["components"]["schemas"]["Level"]["enum"]) == set(LEVELS)


@schema.parametrize()
@settings(deadline=None)
def test_every_operation_answers_as_its_schema_says(case: Any, contract_api: LiveServer) -> None:
    """Coverage and fuzzing per operation, with every check: no server error, only documented statuses,
    content types, headers and bodies, schema-valid requests accepted, invalid ones refused."""
    case.call_and_validate()


def test_operations_chained_through_their_links_keep_the_contract(contract_api: LiveServer) -> None:
    """The stateful phase: resources created through the API are read, changed and deleted through the
    links the schema documents, and every answer on the way keeps the contract. It runs in schemathesis'
    own engine (as its command line does), which holds what earlier steps learned steady while Hypothesis
    explores; a bare state machine meets a database that moves on and reports flaky generation instead."""
    phases = {name: {"enabled": False} for name in ("examples", "coverage", "fuzzing")}
    # Only the links the schema documents: schemathesis' own guesses at links (dependency analysis) chain
    # operations that are not related, like a contact's merge after creating any contact.
    stateful = schemathesis.openapi.from_dict(
        _served_schema(),
        config=_config({**phases, "stateful": {"enabled": True, "max-steps": 6, "inference": {"algorithms": []}}}),
    )
    failures: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(stateful).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            failures += [
                f"{check.failure_info.failure.title}: {check.failure_info.failure.message}\n"
                f"{check.failure_info.code_sample}"
                if check.failure_info
                else check.name
                for checks in event.recorder.checks.values()
                for check in checks
                if check.status == Status.FAILURE
            ]
        elif isinstance(event, events.NonFatalError):
            failures.append(event.info.format())
        elif isinstance(event, events.FatalError):
            failures.append(repr(event.exception))
    assert scenarios > 0, "the stateful phase ran no scenario: the schema's links chain nothing"
    assert not failures, "\n\n".join(failures)


@pytest.mark.browser
@pytest.mark.parametrize("docs_path", ["/api/schema", "/api/schema/swagger"])
def test_the_docs_pages_show_the_operations_without_internet(
    browser: Any, contract_api: LiveServer, docs_path: str
) -> None:
    """A tenant browsing the API docs on a machine without internet (or behind a strict proxy) sees every
    operation: the UI's scripts and styles come from the API itself, not from a CDN."""
    context = browser.new_context()
    elsewhere: list[str] = []

    def only_this_machine(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_machine)
    page = context.new_page()
    try:
        page.goto(contract_api.base_url + docs_path)
        page.wait_for_selector(".opblock", timeout=15_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/v1/signup" in summaries and "/api/v1/contacts/{contact_id}" in summaries
        assert elsewhere == []
    finally:
        context.close()
