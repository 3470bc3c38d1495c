"""Loading, from async handlers, what the public endpoints cache per process (``tenants.cache``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

import anyio.to_thread

__all__ = ["load_once"]

T = TypeVar("T")

_loading: dict[Hashable, asyncio.Future[Any]] = {}


async def load_once(key: Hashable, load: Callable[[], T]) -> T:
    """``load()`` (which fills the cache) in a worker thread. Requests that need the same ``key``
    meanwhile wait for that one load instead of each starting their own: otherwise, when a busy entry
    expires, every request in flight goes to the database at once and they all stall together."""
    pending = _loading.get(key)
    if pending is None:
        # A task of its own: a caller that goes away does not cancel the load the others wait for.
        pending = asyncio.ensure_future(anyio.to_thread.run_sync(load))
        _loading[key] = pending
        pending.add_done_callback(lambda done: _finished(key, done))
    return cast("T", await asyncio.shield(pending))


def _finished(key: Hashable, done: asyncio.Future[Any]) -> None:
    _loading.pop(key, None)
    if not done.cancelled():
        done.exception()  # retrieved here too, in case every caller went away first
