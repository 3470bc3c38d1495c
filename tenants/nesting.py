"""How deep JSON from outside may nest. Decoders and tree walks reach Python's recursion limit (about a
thousand frames, fewer under a web server's stack) long before any real document needs the depth, and a
RecursionError would answer 500; so depth is checked without recursion, before anything walks the tree."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_JSON_DEPTH", "nests_deeper_than"]

MAX_JSON_DEPTH = 32
"""Levels of objects and lists a request body may have; the API's own schemas use fewer than five."""


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether the objects and lists in ``value`` nest more than ``limit`` levels (a scalar is 0)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth == limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
