"""The per-process cache of public endpoints (tenants/cache.py)."""

from __future__ import annotations

import pytest

import tenants.cache
from tenants.cache import MISSING, TTLCache


def test_a_busy_entry_is_reloaded_by_a_few_callers_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(tenants.cache.time, "monotonic", lambda: clock[0])
    cache: TTLCache[str, int] = TTLCache(5.0)
    cache.put("site", 1)
    assert all(cache.get("site") == 1 for _ in range(10_000))  # young: always answered
    clock[0] += 4.8  # its last tenth
    reloads = sum(cache.get("site") is MISSING for _ in range(10_000))
    # A few callers reload it early (one would do); the others keep getting the value meanwhile,
    # instead of every request in flight reloading it at once when it expires.
    assert 0 < reloads < 1_000
    cache.put("site", 2)  # the early reload renews it
    clock[0] += 0.3
    assert cache.get("site") == 2
    clock[0] += 5.0
    assert cache.get("site") is MISSING  # expired
    cache.put("none", None)  # a miss is cached too
    assert cache.get("none") is None
