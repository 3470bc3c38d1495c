"""Loading cached entries from async handlers (api/loading.py): one load per key at a time."""

from __future__ import annotations

import asyncio
import threading

import pytest

from api.loading import load_once


def test_requests_missing_the_same_entry_share_one_load() -> None:
    release = threading.Event()
    loads: list[str] = []

    def load(key: str) -> str:
        loads.append(key)
        release.wait(10)
        return f"value of {key}"

    async def scenario() -> list[str]:
        waiting = [asyncio.ensure_future(load_once(("site", "a"), lambda: load("a"))) for _ in range(50)]
        other = asyncio.ensure_future(load_once(("site", "b"), lambda: load("b")))
        await asyncio.sleep(0.1)  # every request is waiting now
        waiting[0].cancel()  # one caller goes away: the others' load goes on
        release.set()
        return [*await asyncio.gather(*waiting[1:]), await other]

    results = asyncio.run(scenario())
    assert results == ["value of a"] * 49 + ["value of b"]
    assert sorted(loads) == ["a", "b"]  # one load per key, not one per request


def test_a_failed_load_fails_its_waiters_and_the_next_request_loads_again() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database away")
        return "loaded"

    async def scenario() -> str:
        first = await asyncio.gather(*(load_once("tenant", flaky) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(result, ConnectionError) for result in first)
        return await load_once("tenant", flaky)

    assert asyncio.run(scenario()) == "loaded"
    assert len(attempts) == 2
    with pytest.raises(ZeroDivisionError):
        asyncio.run(load_once("broken", lambda: 1 // 0))
