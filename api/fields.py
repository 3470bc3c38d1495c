"""Rules shared by request schemas: one declaration that msgspec enforces and the OpenAPI schema shows.

Patterns are read by two regex engines: msgspec validates with Python's ``re``, clients and fuzzers read
them as JSON Schema (ECMA 262) patterns. They differ on ``\\s``, ``\\w`` and ``$`` (Python's also matches
before a final newline), so patterns here spell their classes out and end with :data:`END`.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

__all__ = ["EMAIL", "END", "HTTP_URL", "NOT_BLANK", "SLUG", "SPACE", "Email", "HttpUrl", "Slug", "given"]

T = TypeVar("T")

SPACE = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""What Python's ``str.strip()`` removes, as the inside of a character class."""
END = r"$(?!\n)"
"""The end of the value, in both engines."""
NOT_BLANK = rf"[^{SPACE}]"
"""At least one character that is not white space (services trim names before storing them)."""
EMAIL = rf"^[^@{SPACE}]{{1,64}}@[^@{SPACE}]+\.[^@{SPACE}]+{END}"
"""The accounts service's email rule (``EMAIL_PATTERN``)."""
SLUG = rf"^[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?{END}"
"""The accounts service's slug rule (``SLUG_PATTERN``)."""
_HOST = rf"[^{SPACE}/?#\[\]@:][^{SPACE}/?#\[\]@]*"
HTTP_URL = rf"^https?://(?:[^{SPACE}/?#\[\]@]*@)?{_HOST}(?:[/?#][^{SPACE}]*)?{END}"
"""An absolute http(s) URL with a host name (no IPv6 literal: the standard library refuses some of them)."""

Email = Annotated[
    str, msgspec.Meta(max_length=320, pattern=EMAIL, description="An email address like name@example.com")
]
Slug = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=63,
        pattern=SLUG,
        description="Lowercase letters, digits and dashes, not starting or ending with a dash",
    ),
]
HttpUrl = Annotated[str, msgspec.Meta(max_length=4096, pattern=HTTP_URL, description="An absolute http(s) URL")]


def given_fields(update: msgspec.Struct) -> dict[str, Any]:
    """The fields a partial update gives, as the service's keyword arguments (same names)."""
    return {name: value for name in update.__struct_fields__ if (value := getattr(update, name)) is not msgspec.UNSET}


def given(value: T | msgspec.UnsetType) -> T | None:
    """A partial update's field as the services read it: None means "not given"."""
    return None if value is msgspec.UNSET else value
