"""Text PostgreSQL cannot store is refused at the edge, for every route, before any handler runs.

One application-level middleware (installed in ``create_app``), so a new route cannot forget it. It
reads what the handler will read, through Litestar's own parsing (the body and form are cached on the
connection, so the handler reads them again for free): the path and its parameters, the query, and
the body when it is a form or JSON (whatever its content type: the tracker sends JSON as text/plain).
A refusal is ``400`` problem details naming each field, the answer Litestar itself gives for a
parameter or body it cannot take (so it is already in every operation's documented responses). A
browser's form (urlencoded or multipart, not asking for JSON), or a browser's GET asking for HTML, gets the same
refusal as a page that names the fields (:class:`api.web.FormRefused`), like every other refused form.

ASGI handlers (collect) get the path and query check only: they read their own body, and collect
strips such text from hits instead (see ``tenants.tracking.hits``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from api.web.csrf import FormRefused
from tenants.nesting import MAX_JSON_DEPTH, nests_deeper_than
from tenants.text import UNSTORABLE_MESSAGE, find_unstorable, is_storable

__all__ = ["UNSTORABLE_DETAIL", "RefuseUnstorableText"]

UNSTORABLE_DETAIL = "the request holds text that cannot be stored (U+0000 or an unpaired surrogate)"
_FORMS = (RequestEncodingType.URL_ENCODED.value, RequestEncodingType.MULTI_PART.value)


class RefuseUnstorableText(ASGIMiddleware):
    """Answers ``400`` with ``errors: [{field, message}]`` when any text of the request is unstorable."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        fields = _unstorable_in_path(scope)
        if scope.get("query_string") or isinstance(scope.get("route_handler"), HTTPRouteHandler):
            # Not for collect's every hit: its hot path has no query and reads its own body.
            request: Request[Any, Any, Any] = Request(scope, receive)
            fields += _unstorable_in_query(request)
            if not fields and isinstance(scope.get("route_handler"), HTTPRouteHandler):
                fields = await _unstorable_in_body(request)
        if fields and _is_browser_form(scope):
            raise FormRefused(_unstorable_page_message(fields), 400)
        if fields:
            raise ValidationException(
                UNSTORABLE_DETAIL, extra=[{"key": field, "message": UNSTORABLE_MESSAGE} for field in fields]
            )
        await next_app(scope, receive, send)


def _is_browser_form(scope: Scope) -> bool:
    """A browser's form, or a browser's page whose address it typed (a GET asking for HTML, such as a report's
    range): either gets a page back, not problem details."""
    request: Request[Any, Any, Any] = Request(scope)
    content_type, _ = request.content_type
    accept = request.headers.get("accept") or ""
    if request.method in {"GET", "HEAD"}:
        return "text/html" in accept and "json" not in accept
    return content_type in _FORMS and "json" not in accept


def _unstorable_page_message(fields: list[str]) -> str:
    named = ", ".join(fields)
    which = f"The field {named} holds" if len(fields) == 1 else f"The fields {named} hold"
    return f"{which} a character that cannot be stored (U+0000 or an unpaired surrogate); remove it and try again."


def _unstorable_in_path(scope: Scope) -> list[str]:
    if is_storable(scope["path"]):
        return []
    params = scope.get("path_params") or {}
    return [name for name, value in params.items() if isinstance(value, str) and not is_storable(value)] or ["path"]


def _unstorable_in_query(request: Request[Any, Any, Any]) -> list[str]:
    fields: list[str] = []
    for name, value in request.query_params.multi_items():
        if not (is_storable(name) and is_storable(value)):
            fields.append(find_unstorable({name: value}, "") or "query")
    return fields


async def _unstorable_in_body(request: Request[Any, Any, Any]) -> list[str]:
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE") and not request.headers.get("content-length"):
        return []
    content_type, _ = request.content_type
    if content_type in _FORMS:
        form = await request.form()
        places = (find_unstorable({name: value}, "") for name, value in form.multi_items() if isinstance(value, str))
        return [place for place in places if place]
    body = await request.body()
    if b"\\u" not in body:
        return []  # JSON escapes are the only way NUL or a lone surrogate gets into a valid JSON text
    try:
        data = msgspec.json.decode(body)
    except RecursionError:
        return []  # nested too deeply: the handler refuses it in its own words
    except msgspec.DecodeError:
        try:  # msgspec refuses a lone surrogate escape outright; Python's decoder keeps it, to be named
            data = json.loads(body)
        except (ValueError, RecursionError):
            return []  # not JSON: the handler refuses it in its own words
    if nests_deeper_than(data, MAX_JSON_DEPTH):
        return []  # refused by the handler; naming the place would walk every level
    place = find_unstorable(data, "")
    return [place or "body"] if place is not None else []
