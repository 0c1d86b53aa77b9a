"""The repository: the one write pipeline and the one read pipeline of the server.

Read (reads.py, searches.py): every query ANDs the access filter gathered from FILTER_QUERY
hooks, and every resource that leaves passes CAN_SEE and WILL_SEE. Write (writes.py): hooks,
preconditions, meta, index values, then current + history + IN_TRANSACTION hooks in one
MongoDB transaction, then AFTER_COMMIT hooks. `Repository` is the one object callers use.
"""

from __future__ import annotations

from fhir_server.storage.records import (
    INDEX_PROJECTION,
    NewVersion,
    SearchPage,
    StaleVersion,
    WriteOutcome,
    _and,
    unchanged,
    without_server_meta,
)
from fhir_server.storage.writes import WritePipeline

__all__ = [
    "INDEX_PROJECTION",
    "NewVersion",
    "Repository",
    "SearchPage",
    "StaleVersion",
    "WriteOutcome",
    "_and",
    "unchanged",
    "without_server_meta",
]


class Repository(WritePipeline):
    """Reads, searches and writes FHIR resources: see the modules of each pipeline."""
