"""Many resources as one unit of work: the bulk loader's write path.

The same planner (fhir_server.storage.pipeline) as a single write, with its hooks, and one
commit for the batch: one query per type for the current versions, one bulk write per type.
Unlike other units, a batch is planned before its transaction opens: it has no conditional
criteria to lock, the commit's version check catches anything that moved meanwhile (the unit
is then planned again), and a transaction kept open while 500 resources are validated
conflicts with the batch in flight beside it, each conflict re-running the whole plan.
Resources with an id are updated-or-created, others created. A resource that fails its plan
(validation, ...) is reported and left out; the others are written. A resource twice in one
batch starts a new unit at its second appearance, so that its versions follow each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.hooks import Change
from fhir_server.storage.pipeline import Planned, retrying
from fhir_server.storage.repository import Repository


@dataclass
class BulkItem:
    where: str  # file and position, for the report
    resource: dict[str, Any]


@dataclass
class BulkResult:
    item: BulkItem
    outcome: str  # created | updated | unchanged | failed
    reason: str = ""


def _reason(error: FhirError) -> str:
    return f"{error.status}: " + "; ".join(i.diagnostics for i in error.all_issues())[:300]


def _units(items: list[BulkItem]) -> list[list[BulkItem]]:
    """Consecutive runs of items in which no resource id appears twice."""
    units: list[list[BulkItem]] = [[]]
    seen: set[tuple[str, str]] = set()
    for item in items:
        rid = item.resource.get("id")
        key = (str(item.resource["resourceType"]), rid) if isinstance(rid, str) else None
        if key is not None and key in seen:
            units.append([])
            seen.clear()
        if key is not None:
            seen.add(key)
        units[-1].append(item)
    return [unit for unit in units if unit]


async def write_batch(repo: Repository, context: RequestContext, items: list[BulkItem]) -> list[BulkResult]:
    results: list[BulkResult] = []
    for unit in _units(items):
        results.extend(await _write_unit(repo, context, unit))
    return results


async def _write_unit(repo: Repository, context: RequestContext, items: list[BulkItem]) -> list[BulkResult]:
    planner = repo.planner
    # Decided once: a retried attempt must not take the id its predecessor stamped for its own.
    targets = [(item, str(item.resource["resourceType"]), item.resource.get("id")) for item in items]
    keys = [(rtype, given) for _, rtype, given in targets if isinstance(given, str)]

    async def attempt() -> tuple[list[BulkResult], list[Change]]:
        previous = await planner.current_many(None, context, keys)
        results: list[BulkResult] = []
        planned: list[Planned] = []
        for item, rtype, given in targets:
            resource = item.resource
            try:
                if isinstance(given, str):
                    plan = await planner.update_from(context, rtype, given, resource, previous.get((rtype, given)))
                else:
                    plan = await planner.create(None, context, resource, resource_id=str(uuid.uuid4()))
            except FhirError as error:
                results.append(BulkResult(item, "failed", _reason(error)))
                continue
            results.append(BulkResult(item, plan.outcome))
            planned.append(plan)

        async def commit(session: AsyncClientSession) -> list[Change]:
            return await repo.committer.commit(session, context, planned)

        return results, await repo.database.in_transaction(commit)

    results, changes = await retrying(attempt, "a resource of the batch")
    await repo.committer.after_commit(context, changes)
    return results
