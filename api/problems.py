"""Every error leaves as RFC 9457 problem details: ``{type, title, status, detail, errors?}``."""

from __future__ import annotations

import contextlib
import logging
import re
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from tenants.errors import UNAVAILABLE, DomainError, Invalid, RateLimited

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem", "problem_body"]

log = logging.getLogger("trailmark.api")
PROBLEM_JSON = "application/problem+json"


def problem_body(status: int, detail: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return body


def problem(
    status: int, detail: str, *, errors: Any = None, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(problem_body(status, detail, errors), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    errors = [{"field": f, "message": m} for f, m in exc.errors.items()] if isinstance(exc, Invalid) else None
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return problem(exc.status, exc.message, errors=errors, headers=headers)


_BROKEN_RULE = re.compile(
    r"^(?:Expected `[^`]+` (?:of length|matching regex|[<>]=?|that's a multiple of|with(?:out)? a timezone)"
    r"|Invalid (?:enum )?value)"
)
"""msgspec's messages for a value that has the declared type but breaks a declared rule (length, range,
pattern, enum, timezone): the body's shape is right, the value is not."""


def _field_problem(entry: dict[str, Any]) -> dict[str, str]:
    return {"field": str(entry.get("key") or entry.get("source") or "body"), "message": str(entry.get("message"))}


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client sent: Litestar names a parameter declared as ``from_day: … QueryParameter(name="from")``
    by its Python name; the client knows it as ``from``."""
    with contextlib.suppress(AttributeError, KeyError):
        definition = request.route_handler.parsed_fn_signature.parameters[key].kwarg_definition
        alias = getattr(definition, "query", None) or getattr(definition, "name", None)
        if alias:
            return str(alias)
    return key


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    detail = exc.detail or HTTPStatus(exc.status_code).phrase
    status = exc.status_code
    errors = exc.extra if isinstance(exc, ValidationException) else None
    if isinstance(errors, list):
        entries = [e for e in errors if isinstance(e, dict)]
        # Litestar's entries name the field in "key"; keep only what a client needs.
        errors = [
            {
                "field": _public_name(request, str(e.get("key") or e.get("source") or "body")),
                "message": str(e.get("message")),
            }
            for e in entries
        ]
        # Malformed JSON and wrong types are 400; a well-typed body that breaks a rule its schema declares is
        # 422 with one entry per field, as the services answer for the rules only they can check.
        if entries and all(e.get("source") == "body" and _BROKEN_RULE.match(str(e.get("message"))) for e in entries):
            status, detail = 422, "the body breaks the rules of its schema; see errors"
    return problem(status, detail, errors=errors, headers=exc.headers)


RETRY_UNAVAILABLE_SECONDS = 5


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.warning("%s %s: a backing service is unavailable: %s", request.method, request.url.path, type(exc).__name__)
    return problem(
        503,
        "a backing service (database or Redis) is unavailable; retry later",
        headers={"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)},
    )


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "an internal error occurred; it has been logged")


EXCEPTION_HANDLERS: Any = {
    DomainError: _domain_error,
    HTTPException: _http_error,
    **dict.fromkeys(UNAVAILABLE, _unavailable),
    Exception: _unexpected_error,
}
