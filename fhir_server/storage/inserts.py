"""Inserting append-only documents that a replay may bring twice (the audit writer's batches
after a crash): the ones stored already are skipped, anything else wrong is raised."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

DUPLICATE_KEY = 11000


async def insert_new(collection: AsyncCollection[dict[str, Any]], docs: list[dict[str, Any]],
                     write_concern: WriteConcern) -> None:
    """Inserts `docs` (unordered: one stored already does not stop the rest), ignoring those
    whose _id is stored; a write concern error or any other write error is raised."""
    if not docs:
        return
    try:
        await collection.with_options(write_concern=write_concern).insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
