"""The OpenAPI schema is the API's contract: tenants generate clients from it and fuzzers trust it.

Schemathesis runs every check it has against the real API process on the test database: each operation
through its coverage and fuzzing phases, then the stateful phase that chains create → get/change/delete
through the schema's links. Every exclusion is written down, with its reason, in schemathesis.toml (which a
person's `schemathesis run` in the checkout reads too).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
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

CONTRACT_CONFIG = Path(__file__).parent.parent / "schemathesis.toml"
"""The checks and every exclusion with its reason: the same file a person's `schemathesis run` reads."""


CONTRACT_SEED = 20261201
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
    """schemathesis.toml, aimed at the contract's own API process, with these phases."""
    with CONTRACT_CONFIG.open("rb") as file:
        config = tomllib.load(file)
    config.update(
        phases=phases,
        headers={"Authorization": f"Bearer {_CONTRACT_KEY}"},
        cache={"enabled": False},  # every run starts from the schema alone, no failures replayed from a cache
    )
    config["base-url"] = f"http://127.0.0.1:{CONTRACT_PORT}"
    # The suite explores the same examples every run, so a run fails only for a change; a person's
    # `schemathesis run` (random seeds) explores further, and what it finds becomes a fix and a test here.
    config["seed"] = CONTRACT_SEED
    return SchemathesisConfig.from_dict(config)


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
@settings(deadline=None, derandomize=True)
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
