"""The one rule for text that comes in from outside: PostgreSQL must be able to store it.

PostgreSQL refuses U+0000 (NUL) in ``text`` and in ``jsonb`` (``\\u0000``), and an unpaired UTF-16
surrogate cannot be encoded as UTF-8 at all, so either answers 500 at the database or, for a hit that
collect already acknowledged, sends a whole ingest batch to the dead letters. The API refuses such
text at the edge (``api/text.py``, one hook for every route); collect strips it from hits, because a
browser's page title may carry a broken emoji and the rest of the hit is worth keeping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "UNSTORABLE_MESSAGE",
    "find_unstorable",
    "is_storable",
    "strip_unstorable",
    "strip_unstorable_json_escapes",
]

UNSTORABLE_MESSAGE = "must not contain U+0000 (NUL) or an unpaired surrogate: they cannot be stored as text"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""Surrogates are unpaired by definition in a Python ``str`` (a pair decodes to one code point)."""

# Every backslash escape of a JSON text, left to right, so an escaped backslash (``\\u0000`` is the
# six characters "\u0000", not NUL) is consumed before the ``u`` that follows it. A surrogate pair is
# one match and kept; a lone surrogate or NUL escape is dropped.
_JSON_ESCAPE = re.compile(rb"\\(?:u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|u([0-9a-f]{4})|.)", re.IGNORECASE)


def is_storable(value: str) -> bool:
    """Whether PostgreSQL can store ``value`` as text (or inside jsonb)."""
    return _UNSTORABLE.search(value) is None


def strip_unstorable(value: str) -> str:
    """``value`` without the characters PostgreSQL cannot store."""
    return value if _UNSTORABLE.search(value) is None else _UNSTORABLE.sub("", value)


def find_unstorable(value: Any, field: str) -> str | None:
    """The first place in ``value`` (a string, or JSON-like lists and dicts, keys included) that holds
    unstorable text, named from ``field`` as ``field.key[0]``; None when everything can be stored."""
    return next(_unstorable_places(value, field), None)


def _unstorable_places(value: Any, field: str) -> Iterator[str]:
    if isinstance(value, str):
        if _UNSTORABLE.search(value) is not None:
            yield field
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{field}.{key}" if field else str(key)
            if isinstance(key, str) and _UNSTORABLE.search(key) is not None:
                yield strip_unstorable(name)  # the name goes back to the client, so it must be clean too
            yield from _unstorable_places(item, name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _unstorable_places(item, f"{field}[{index}]")


def _drop_unstorable_escape(match: re.Match[bytes]) -> bytes:
    code = match.group(3)
    if code is not None and (int(code, 16) == 0 or 0xD800 <= int(code, 16) <= 0xDFFF):
        return b""  # NUL, or a surrogate that the first alternative did not find paired
    return match.group(0)


def strip_unstorable_json_escapes(body: bytes) -> bytes:
    """A JSON text without the ``\\u0000`` and unpaired surrogate escapes in its strings (what a
    browser's ``JSON.stringify`` writes for them), so that it decodes to storable text. Literal NUL
    bytes and invalid UTF-8 are left for the JSON decoder to refuse."""
    if b"\\u" not in body:
        return body  # the common case: nothing escaped as \\uXXXX
    return _JSON_ESCAPE.sub(_drop_unstorable_escape, body)
