"""The repository: the one write pipeline and the one read pipeline of the server.

Read (reads.py, searches.py): every query ANDs the access filter gathered from FILTER_QUERY
hooks, and every resource that leaves passes CAN_SEE and WILL_SEE. Write (writes.py over
pipeline/): every writer is a unit of work, `plan` (targets, conditional locks, If-Match,
patch, index, compartments, BEFORE_* hooks) then `commit` (bulk writes per type, history,
IN_TRANSACTION hooks) in one MongoDB transaction, then AFTER_COMMIT hooks. `Repository` is the
one object callers use.
"""

from __future__ import annotations

from fhir_server.storage.pipeline import NewVersion, StaleVersion
from fhir_server.storage.records import (
    INDEX_PROJECTION,
    SearchPage,
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
