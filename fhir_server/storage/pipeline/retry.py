"""The one retry of the write pipeline: a unit of work runs again, planned afresh, when it lost
a race to a concurrent writer.

Inside `Database.in_transaction` the driver already runs the transaction again on transient
errors (a write conflict between two transactions, a commit with an unknown result). What
it cannot retry is a race the write itself notices: a current version that moved between
the read and the replace (`StaleVersion`) or a resource id inserted meanwhile (duplicate
key). Those are retried here, a few times with jittered back-off, then answered 409. A unit
pinned to a version (If-Match) is planned again too: its plan sees the new version and
answers 412 itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fhir_server.errors import Conflict
from fhir_server.storage.database import Database
from fhir_server.storage.inserts import DUPLICATE_KEY

T = TypeVar("T")
MAX_ATTEMPTS = 8
WRITE_CONFLICT = 112


class StaleVersion(Exception):
    """The current version moved under us between the read and the write (optimistic lock)."""


def _lost_race(error: Exception) -> bool:
    if isinstance(error, StaleVersion | DuplicateKeyError):
        return True
    if isinstance(error, BulkWriteError):
        codes = {e.get("code") for e in error.details.get("writeErrors", [])}
        return bool(codes) and codes <= {DUPLICATE_KEY, WRITE_CONFLICT}
    return False


async def run_unit(database: Database, work: Callable[[AsyncClientSession], Awaitable[T]],
                   what: str = "the resource") -> T:
    """Runs `work(session)` (plan and commit) in one transaction until it does not lose a race."""
    return await retrying(lambda: database.in_transaction(work), what)


async def retrying(attempt: Callable[[], Awaitable[T]], what: str = "the resource") -> T:
    """Runs `attempt()` (a unit planned afresh each time) until it does not lose a race."""
    for n in range(MAX_ATTEMPTS):
        try:
            return await attempt()
        except (StaleVersion, DuplicateKeyError, BulkWriteError) as error:
            if not _lost_race(error):
                raise
            await asyncio.sleep(random.uniform(0, 0.002 * 2**n))
    raise Conflict(f"{what} is being changed too often; try again")
