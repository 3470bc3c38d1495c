"""JSON bodies are read as strictly as their schema is written."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

from tenants.nesting import MAX_JSON_DEPTH, nests_deeper_than

__all__ = ["StrictJSONRequest"]

_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


class StrictJSONRequest(Request[Any, Any, Any]):
    """Litestar converts a body to its declared type leniently (``0`` for ``false``, ``"1"`` for ``1``), so
    it would accept bodies its OpenAPI schema calls invalid. The body is checked against that type once,
    strictly, before Litestar converts it as usual: what the schema refuses, the API refuses (400/422)."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError:
            raise _too_deep() from None
        if nests_deeper_than(value, MAX_JSON_DEPTH):
            raise _too_deep()  # before any walk below recurses into it
        data = self.route_handler.parsed_fn_signature.parameters.get("data")
        if data is not None and not getattr(self, "_strictly_checked", False):
            self._strictly_checked = True
            try:
                msgspec.convert(_integral_floats_as_ints(value), type=data.annotation, strict=True)
            except msgspec.ValidationError as error:
                message = str(error)
                found = _AT.search(message)
                raise ValidationException(
                    detail=f"Validation failed for {self.method} {self.url.path}",
                    extra=[
                        {
                            "message": message[: found.start()] if found else message,
                            "key": found.group("path") if found else "body",
                            "source": "body",
                        }
                    ],
                ) from None
        return value


def _too_deep() -> ValidationException:
    message = f"nests deeper than {MAX_JSON_DEPTH} levels"
    return ValidationException(detail=f"the body {message}", extra=[{"message": message, "key": "body"}])


def _integral_floats_as_ints(value: Any) -> Any:
    """JSON Schema counts ``1.0`` as an integer; strict msgspec does not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    return value
