"""Reading the Manage screens' HTML forms into the REST API's own request structs, so a site, form, link,
page or membership typed into the dashboard meets exactly the rules the API enforces (one declaration)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tenants.errors import Invalid

__all__ = ["changed_fields", "lines", "parsed"]

T = TypeVar("T")


def parsed(kind: str, values: dict[str, Any], struct: type[T]) -> T:
    """``values`` as ``struct``, or :class:`Invalid` (a 422 page) saying which field breaks which rule."""
    try:
        return msgspec.convert(values, struct, strict=False)
    except msgspec.ValidationError as error:
        raise Invalid(f"the {kind} is invalid: {error}") from None


def lines(text: str) -> list[str]:
    """One value per line (a textarea), blanks dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The names whose values differ: what an audit entry records (never the values themselves)."""
    return sorted(name for name in after if before.get(name) != after[name])
