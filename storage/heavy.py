"""A per-process limit on memory-heavy work members can trigger (adds, zip imports, exports, contact sheets).

Each of these is bounded in memory on its own (images decoded one or two at a time, archives streamed to and from
temporary files); the limit bounds how many run at once, so a member repeating a command cannot multiply the
bound. Waiters queue cheaply on a semaphore, first come first served.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# event loop → {limit: semaphore}; a semaphore belongs to one loop, and tests run many loops in one process.
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary())


def _semaphore(limit: int) -> asyncio.Semaphore:
    per_loop = _slots.setdefault(asyncio.get_running_loop(), {})
    if limit not in per_loop:
        per_loop[limit] = asyncio.Semaphore(max(1, limit))
    return per_loop[limit]


@asynccontextmanager
async def heavy_slot(limit: int) -> AsyncIterator[None]:
    """Hold one of ``limit`` process-wide slots for the duration of the block."""
    async with _semaphore(limit):
        yield


def running(limit: int) -> int:
    """How many slots of ``limit`` are held in this event loop right now (for tests and benches)."""
    return max(1, limit) - _semaphore(limit)._value  # noqa: SLF001 — asyncio exposes no public count
