"""Stopping background tasks without swallowing the stopper's own cancellation.

`with suppress(CancelledError): await task` after `task.cancel()` also swallows a cancellation
of the coroutine doing the stopping. The server's shutdown runs under a deadline
(app.py, CLOSE_TIMEOUT) that works by cancelling it: once swallowed, a later step that hangs
(the driver's close with its database gone) held `fhir-server serve` open for minutes after it
had said it was stopping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]],
                     ignore: tuple[type[BaseException], ...] = (Exception,)) -> None:
    """Cancels `tasks` and waits for each to end. Their own end (cancelled, or one of `ignore`
    raised) is not an error; a cancellation of the caller itself goes on up."""
    current = asyncio.current_task()
    # A stop inside a `finally` that a cancellation is passing through starts out cancelling:
    # only a cancellation that arrives while waiting here is the caller's own to pass on.
    before = current.cancelling() if current is not None else 0
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            if current is not None and current.cancelling() > before:
                raise
        except ignore:
            pass
