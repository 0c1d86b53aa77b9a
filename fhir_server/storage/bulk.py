"""Many resources in one transaction: the bulk loader's write path.

Same documents (Repository.new_version), same hooks (BEFORE_*, IN_TRANSACTION, AFTER_COMMIT)
as a single write; only the I/O is batched: one query per type for the previous versions,
one bulk write per type for current and history. A batch whose versions moved underneath it
is written again one resource at a time through the ordinary pipeline.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pymongo import InsertOne, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.hooks import Change, Pointcut
from fhir_server.storage.repository import NewVersion, Repository, StaleVersion, unchanged

Doc = dict[str, Any]


@dataclass
class BulkItem:
    where: str  # file and position, for the report
    resource: dict[str, Any]


@dataclass
class BulkResult:
    item: BulkItem
    outcome: str  # created | updated | unchanged | failed
    reason: str = ""


async def write_versions(
    repo: Repository,
    session: AsyncClientSession,
    context: RequestContext,
    versions: list[tuple[str, Doc | None, NewVersion]],
) -> list[Change]:
    """Writes prepared versions inside `session`: one bulk write per type for the current
    documents (optimistic on the previous `v`), one insert_many per type for history, then the
    IN_TRANSACTION hooks of every change. Raises StaleVersion if a previous version moved."""
    current_ops: dict[str, list[Any]] = defaultdict(list)
    history_docs: dict[str, list[Doc]] = defaultdict(list)
    for rtype, prev, version in versions:
        if prev is None:
            current_ops[rtype].append(InsertOne(version.current))
        else:
            current_ops[rtype].append(ReplaceOne({"_id": prev["_id"], "v": prev["v"]}, version.current))
        history_docs[rtype].append(version.history)
    for rtype, ops in current_ops.items():
        result = await repo.database.current(rtype).bulk_write(ops, ordered=False, session=session)
        if result.inserted_count + result.matched_count != len(ops):
            raise StaleVersion()
        await repo.database.history(rtype).insert_many(history_docs[rtype], ordered=False, session=session)
    changes = [version.change for *_, version in versions]
    await repo.hooks.call(Pointcut.IN_TRANSACTION, context=context, changes=changes, session=session,
                          db=repo.database.db)
    return changes


def _reason(error: FhirError) -> str:
    return f"{error.status}: " + "; ".join(i.diagnostics for i in error.all_issues())[:300]


async def _one_by_one(repo: Repository, context: RequestContext, items: list[BulkItem]) -> list[BulkResult]:
    results = []
    for item in items:
        resource = item.resource
        try:
            rid = resource.get("id")
            if isinstance(rid, str):
                outcome = await repo.update(context, resource["resourceType"], rid, resource)
            else:
                outcome = await repo.create(context, resource)
        except FhirError as error:
            results.append(BulkResult(item, "failed", _reason(error)))
            continue
        kind = "created" if outcome.created else "updated" if outcome.changed else "unchanged"
        results.append(BulkResult(item, kind))
    return results


async def write_batch(repo: Repository, context: RequestContext, items: list[BulkItem]) -> list[BulkResult]:
    keys = [(i.resource["resourceType"], i.resource.get("id")) for i in items]
    ided = [k for k in keys if isinstance(k[1], str)]
    if len(set(ided)) != len(ided):
        # The same resource twice in one batch: versions must follow each other in order.
        return await _one_by_one(repo, context, items)
    previous: dict[tuple[str, str], Doc] = {}
    by_type: dict[str, list[str]] = defaultdict(list)
    for id_type, id_value in ided:
        by_type[id_type].append(str(id_value))
    for rtype, ids in by_type.items():
        async for doc in repo.database.current(rtype).find({"_id": {"$in": ids}}):
            previous[(rtype, doc["_id"])] = doc
    results: dict[int, BulkResult] = {}
    planned: list[tuple[int, str, Doc | None, NewVersion]] = []
    for n, item in enumerate(items):
        resource = item.resource
        rtype = resource["resourceType"]
        given = resource.get("id")
        rid: str = given if isinstance(given, str) else str(uuid.uuid4())
        prev = previous.get((rtype, rid))
        live = prev is not None and not prev.get("del")
        if unchanged(prev, resource):
            results[n] = BulkResult(item, "unchanged")
            continue
        try:
            await repo.before_write(context, resource, prev if live else None)
        except FhirError as error:
            results[n] = BulkResult(item, "failed", _reason(error))
            continue
        interaction = "update" if prev is not None else "create"
        planned.append((n, rtype, prev, repo.new_version(rtype, rid, resource, prev, interaction)))

    async def work(session: AsyncClientSession) -> list[Change]:
        return await write_versions(repo, session, context, [(rtype, prev, v) for _, rtype, prev, v in planned])

    if planned:
        try:
            changes = await repo.database.in_transaction(work)
        except (StaleVersion, BulkWriteError):
            # Something changed these resources meanwhile: redo the batch the careful way.
            positions = [n for n, *_ in planned]
            redone = await _one_by_one(repo, context, [items[n] for n in positions])
            results.update(zip(positions, redone, strict=True))
            return [results[n] for n in range(len(items))]
        for change in changes:
            await repo.hooks.call(Pointcut.AFTER_COMMIT, context=context, change=change)
        for n, _, prev, _version in planned:
            results[n] = BulkResult(items[n], "updated" if prev is not None and not prev.get("del") else "created")
    return [results[n] for n in range(len(items))]
