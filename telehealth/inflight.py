"""One piece of work per key at a time in this process: callers asking for a key whose work
is running share its result instead of starting their own.

The first join of a visit creates its Encounter. A nervous patient's 16 tabs join at the same
moment; as 16 conditional creates they were 16 transactions racing for one lock document,
retried one after another by the driver. Here they are one create, which the other 15 await.
Across processes the conditional create still makes one Encounter (one racing transaction
per process at most).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class InFlight(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            # Retrieved here too, so an outcome nobody awaited any more is not reported as
            # "never retrieved"; the callers still awaiting it get it as theirs.
            task.exception()

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            # A task of its own: the caller that started it may go away (its client hung up,
            # its request cancelled) while others still wait for the result.
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)
