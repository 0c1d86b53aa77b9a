"""Stopping background tasks without swallowing the stopper's own cancellation.

`with suppress(CancelledError): await task` after `task.cancel()` also swallows a cancellation
of the coroutine doing the stopping. The server's shutdown runs under a deadline
(app.py, CLOSE_TIMEOUT) that works by cancelling it: once swallowed, a later step that hangs
(the driver's close with its database gone) held `fhir-server serve` open for minutes after it
had said it was stopping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


# How long a stop waits for its tasks. A task may swallow its cancellation (the driver turns a
# cancelled wait for a server into a RuntimeError, which a worker's retry loop catches): it is
# asked again every ASK_AGAIN seconds, and after PATIENCE left behind rather than waited for.
PATIENCE = 5.0
ASK_AGAIN = 0.5


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]],
                     ignore: tuple[type[BaseException], ...] = (Exception,),
                     patience: float = PATIENCE) -> None:
    """Cancels `tasks` and waits for each to end, at most `patience` seconds. Their own end
    (cancelled, or one of `ignore` raised) is not an error; a cancellation of the caller itself
    goes on up."""
    current = asyncio.current_task()
    # A stop inside a `finally` that a cancellation is passing through starts out cancelling:
    # only a cancellation that arrives while waiting here is the caller's own to pass on.
    before = current.cancelling() if current is not None else 0
    pending = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    for task in pending:
        task.cancel()
    while running := [task for task in pending if not task.done()]:
        left = deadline - loop.time()
        if left <= 0:
            log.warning("%d background task(s) did not stop within %ss: left behind", len(running), patience)
            return
        try:
            await asyncio.wait(running, timeout=min(left, ASK_AGAIN))
        except asyncio.CancelledError:
            if current is not None and current.cancelling() > before:
                raise
        for task in running:
            if not task.done():
                task.cancel()
    for task in pending:
        if task.cancelled():
            continue
        error = task.exception()
        if error is not None and not isinstance(error, ignore):
            raise error
