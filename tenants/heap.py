"""Keep the garbage collector away from what a process allocates to start."""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> None:
    """Exempt every object alive now (modules, the app, ORM metadata: hundreds of thousands of objects
    that live as long as the process) from collection. Otherwise each full collection walks them all,
    about 100 ms with the event loop stopped: measured, that was collect's whole p99 under load."""
    gc.freeze()
