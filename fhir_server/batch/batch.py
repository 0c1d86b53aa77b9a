"""A batch Bundle: entries are independent; each gets its own status, one failing stops none."""

from __future__ import annotations

from typing import Any

from fhir_server.batch.dispatch import Dispatcher
from fhir_server.batch.entries import Entry


async def run_batch(entries: list[Entry], dispatcher: Dispatcher) -> list[dict[str, Any]]:
    # In request order: FHIR lets a server process a batch in any order, but order is what a
    # client would guess, and it keeps a batch's effects easy to reason about.
    return [await dispatcher.run(entry) for entry in entries]
