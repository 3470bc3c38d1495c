"""A small per-process cache with expiry, for what public endpoints look up on every request
(sites, tenants, pages, who a visitor is). Changes made elsewhere show within the entry's lifetime."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

__all__ = ["MISSING", "Missing", "TTLCache"]

K = TypeVar("K")
V = TypeVar("V")


class Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()
"""Returned by :meth:`TTLCache.get` when the cache cannot answer (as opposed to a cached None)."""


class TTLCache(Generic[K, V]):
    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | Missing:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return MISSING
        return entry[1]

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; entries are cheap to reload
        self._entries[key] = (time.monotonic() + self.seconds, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
