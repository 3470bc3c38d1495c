"""A small per-process cache with expiry, for what public endpoints look up on every request
(sites, tenants, pages, who a visitor is). Changes made elsewhere show within the entry's lifetime."""

from __future__ import annotations

import random
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

EARLY_RELOAD_WINDOW = 0.1
"""The last part of an entry's life (a share of it) in which a caller may be asked to reload it early."""
EARLY_RELOAD_CHANCE = 0.01


class TTLCache(Generic[K, V]):
    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | Missing:
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        expires_at, value = entry
        left = expires_at - time.monotonic()
        if left <= 0:
            return MISSING
        # Near its end, now and then one caller reloads a busy entry early. Otherwise every request in
        # flight when it expires reloads it at once: measured, a 190 ms stall every few seconds.
        if left < self.seconds * EARLY_RELOAD_WINDOW and random.random() < EARLY_RELOAD_CHANCE:  # noqa: S311
            return MISSING
        return value

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; entries are cheap to reload
        self._entries[key] = (time.monotonic() + self.seconds, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
