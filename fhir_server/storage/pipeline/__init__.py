"""The write pipeline: every writer is a unit of work of two steps, in one transaction.

    single REST write ─┐                              ┌─ plan.py    targets, locks.py, If-Match,
    transaction Bundle ─┤                              │             patch, stamp, index +
    loader (bulk.py) ───┼─ run_unit(retry.py) ─ work ─┤             compartments, BEFORE_* hooks,
                        │   {plan → commit}            │             unchanged → Planned
    Provenance, audit ──┘   (SessionWriter in the      └─ commit.py  bulk write per type, history,
      (IN_TRANSACTION)       same commit)                            IN_TRANSACTION hooks (+ their
                                                                      records), then AFTER_COMMIT

plan (plan.py) decides and prepares every resource's next version (`Planned`); commit
(commit.py) writes them; run_unit (retry.py) runs both in one transaction and again when the
unit lost a race. versions.py builds the stored documents; locks.py keys the lock of
conditional criteria on their canonical form.
"""

from fhir_server.storage.pipeline.commit import Committer, SessionWriter, store_new
from fhir_server.storage.pipeline.plan import Planner, check_if_match
from fhir_server.storage.pipeline.retry import StaleVersion, retrying, run_unit
from fhir_server.storage.pipeline.versions import NewVersion, Planned, Versions

__all__ = [
    "Committer",
    "NewVersion",
    "Planned",
    "Planner",
    "SessionWriter",
    "StaleVersion",
    "Versions",
    "check_if_match",
    "retrying",
    "run_unit",
    "store_new",
]
