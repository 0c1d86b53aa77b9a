"""A batch Bundle: entries are independent; each gets its own status, one failing stops none.

FHIR lets a server process a batch in any order (its entries SHALL have no interdependencies),
but a client still expects what request order gives. So entries run in waves: a wave is a run
of consecutive entries on distinct resources, run concurrently (each is its own interaction,
its own database transaction: overlapping them hides the database's per-commit latency);
waves run one after another. An entry whose effect is not confined to one known resource — a
search, a conditional interaction, an operation, a Consent write (it changes what the others
may see) — is a wave of its own. The outcome is the one request order gives.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fhir_server.batch.dispatch import Dispatcher
from fhir_server.batch.entries import Entry

# Entries of one wave in flight at once (most wait on the batch's group commit, not in a
# transaction of their own: storage/pipeline/group.py).
CONCURRENCY = 32
# Writes that change the access decision of every later entry.
ACCESS_TYPES = ("Consent",)


def _key(entry: Entry) -> tuple[str, str] | None:
    """The one resource an entry is confined to, or None when it may touch others."""
    if entry.error is not None:
        return ("!error", str(entry.index))  # answered without running: confined to nothing
    if entry.resource_type is None or entry.params or entry.if_none_exist:
        return None
    if entry.resource_type.startswith(("_", "$", "metadata")):
        return None
    if entry.resource_type in ACCESS_TYPES and entry.method not in ("GET", "HEAD"):
        return None
    if entry.method == "POST":
        return None if entry.resource_id else ("!new", str(entry.index))  # a new id each
    if entry.resource_id is None or entry.resource_id.startswith(("_", "$")):
        return None
    return (entry.resource_type, entry.resource_id)


def waves(entries: list[Entry]) -> list[list[Entry]]:
    out: list[list[Entry]] = []
    keys: set[tuple[str, str]] = set()
    for entry in entries:
        key = _key(entry)
        if key is None:
            out.append([entry])
            keys = set()
            out.append([])  # nothing joins a wave across this entry
            continue
        if not out or key in keys:
            out.append([])
            keys = set()
        out[-1].append(entry)
        keys.add(key)
    return [wave for wave in out if wave]


async def run_batch(entries: list[Entry], dispatcher: Dispatcher,
                    concurrency: int = CONCURRENCY) -> list[dict[str, Any]]:
    responses: dict[int, dict[str, Any]] = {}
    slots = asyncio.Semaphore(concurrency)

    async def run(entry: Entry) -> None:
        async with slots:
            responses[entry.index] = await dispatcher.run(entry)

    for wave in waves(entries):
        if len(wave) == 1:
            responses[wave[0].index] = await dispatcher.run(wave[0])
        else:
            async with asyncio.TaskGroup() as group:
                for entry in wave:
                    group.create_task(run(entry))
    return [responses[entry.index] for entry in entries]
