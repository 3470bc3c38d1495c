"""Reading the Manage screens' HTML forms into the REST API's own request structs, so a site, form, link,
page or membership typed into the dashboard meets exactly the rules the API enforces (one declaration); and the
one way a refused Manage form answers: the same form again, with what was typed and each reason next to its field.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from litestar.response import Template

from tenants.errors import Conflict, Invalid

__all__ = [
    "NO_REFUSAL",
    "FormShownAgain",
    "Refusal",
    "changed_fields",
    "lines",
    "parsed",
    "row_count",
    "shown_again",
]

T = TypeVar("T")
_PATH = re.compile(r" - at `\$\.([^`]+)`$")


def _form_field(path: str) -> str:
    """A struct path as the form names its input: ``fields[0].name`` → ``fields-0-name``; an item of a list typed
    into one textarea (``allowed_origins[2]``) is that textarea."""
    path = re.sub(r"\[\d+\]$", "", path)
    return re.sub(r"\[(\d+)\]\.?", r"-\1-", path).replace(".", "-")


def _value_at(values: Any, path: str) -> Any:
    """The typed value at a struct path (``allowed_origins[1]``), or None."""
    for part in re.findall(r"[^.\[\]]+", path):
        try:
            values = values[int(part)] if isinstance(values, list) else values[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return values


def parsed(kind: str, values: dict[str, Any], struct: type[T]) -> T:
    """``values`` as ``struct``, or :class:`Invalid` naming the form field that breaks which rule."""
    try:
        return msgspec.convert(values, struct, strict=False)
    except msgspec.ValidationError as error:
        text = str(error)
        found = _PATH.search(text)
        reason = text[: found.start()] if found else text
        if found and "matching regex" in reason:  # the pattern itself would tell a person nothing
            reason = f"{_value_at(values, found.group(1))!r} is not a value this field takes"
        errors = {_form_field(found.group(1)): reason} if found else {}
        raise Invalid(f"the {kind} is invalid: {reason}", errors) from None


@dataclass(frozen=True)
class Refusal:
    """Why a Manage form was not taken, for the form shown again: the whole reason, and per form field."""

    message: str
    status: int
    errors: dict[str, str] = field(default_factory=dict)

    def about(self, name: str) -> str:
        """The reason for the field ``name`` (empty when it is not at fault)."""
        return self.errors.get(name, "")


NO_REFUSAL = Refusal("", 200)
"""What an editor shown for the first time carries: nothing refused."""


class FormShownAgain(Exception):
    """A refused Manage form, raised with its page already built: the same form with what was typed and why; the
    dashboard's exception handler answers with it."""

    def __init__(self, page: Template) -> None:
        super().__init__("the form is shown again with the reasons")
        self.page = page


@asynccontextmanager
async def shown_again(
    show: Callable[[Refusal], Awaitable[Template]], *, conflict_field: str | None = None
) -> AsyncIterator[None]:
    """Around the taking of a Manage form: a refusal of what was typed (an invalid value, a taken slug) raises
    :class:`FormShownAgain` with ``show``'s page of it; anything else (a missing row, a forbidden change) stays
    a page of its own. A conflict names no field, so ``conflict_field`` says which input it is about."""
    try:
        yield
    except (Invalid, Conflict) as error:
        errors = {_form_field(name): reason for name, reason in (getattr(error, "errors", {}) or {}).items()}
        if isinstance(error, Conflict) and conflict_field:
            errors[conflict_field] = error.message
        raise FormShownAgain(await show(Refusal(error.message, error.status, errors))) from error


def row_count(text: str, most: int) -> int:
    """How many rows a table of inputs posted (its hidden ``…_rows`` field): only a tampered form sends one that is
    not a number, or more rows than the struct takes, so that is refused rather than read (a huge count would
    only spin)."""
    try:
        count = int(text or 0)
    except ValueError:
        count = -1
    if not 0 <= count <= most:
        raise Invalid("the form was not sent from its page; reload it and try again", {})
    return count


def lines(text: str) -> list[str]:
    """One value per line (a textarea), blanks dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The names whose values differ: what an audit entry records (never the values themselves)."""
    return sorted(name for name in after if before.get(name) != after[name])
