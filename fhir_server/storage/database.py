"""MongoDB layout: collection names, indexes, and the transaction helper.

Per resource type: `<Type>` holds the current version of each resource (deleted ones stay, as
tombstones, so the version counter and 410 Gone survive), `<Type>_history` holds every
version. Indexes are declared here and created at start-up (idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import cached_property
from typing import Any, TypeVar, cast

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhir_server.errors import DatabaseUnavailable
from fhir_server.resource_types import STORED_TYPES
from fhir_server.storage import audit_batches, schema
from fhir_server.storage.changes import ChangeFeed
from fhir_server.storage.recent import RecentVersions

Doc = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger(__name__)

# Documents that serialize conditional creates with the same criteria (see repository).
CONDITIONAL_LOCKS = "conditional_locks"

# A transaction the database failed with its own InternalError (a fault of the database, seen
# from SecantusDB under load at commit) was rolled back: MongoDB's transactions commit or not,
# and a failed commit without the UnknownTransactionCommitResult label did not. It is run again
# like a transient error, a few times; then the answer is 503, nothing written, not a 500.
INTERNAL_ERROR = 1
INTERNAL_ERROR_ATTEMPTS = 3
RETRY_AFTER_INTERNAL_ERROR = 1


# Indexes an earlier release created that now only cost writes: dropped at start-up.
# AuditEvent's index on every entity (one entry per resource and patient of every read) gave
# way to one holding only the events that name a Consent (interceptors/audit.py), and its
# compartment index to its `patient` one (access.decision BY_PARAMETER).
# Task's focus, requester and basedOn indexes gave way to sparse ones (search.engine SPARSE).
RETIRED_INDEXES: dict[str, tuple[str, ...]] = {"AuditEvent": ("s_sp_entity", "s_compartments_Patient_ts_d"),
                                               "Task": ("s_sp_focus", "s_sp_requester", "s_sp_based-on")}


class Database:
    def __init__(self, client: AsyncMongoClient[Doc], name: str) -> None:
        self.client = client
        self.db: AsyncDatabase[Doc] = client[name]
        # Extra index declarations contributed by other layers (search, compartments, auth).
        self._extra_indexes: dict[str, list[IndexModel]] = {}
        # The committed changes, in commit order, for this process's caches (one stream each).
        self.changes = ChangeFeed(self.db)
        # The versions this process committed lately (storage/recent.py): published below,
        # once their transaction committed.
        self.recent = RecentVersions()

    def current(self, resource_type: str) -> AsyncCollection[Doc]:
        if resource_type == audit_batches.AUDIT_EVENT:
            return self._audit_events
        return self.db[resource_type]

    def history(self, resource_type: str) -> AsyncCollection[Doc]:
        if resource_type == audit_batches.AUDIT_EVENT:  # append-only: its own history
            return self._audit_events
        return self.db[schema.history_collection(resource_type)]

    @cached_property
    def _audit_events(self) -> AsyncCollection[Doc]:
        # AuditEvents, lone and batched (storage.audit_batches), queried as one collection.
        view = audit_batches.AuditEventView(self.db[audit_batches.AUDIT_EVENT], self.audit_batches)
        return cast(AsyncCollection[Doc], view)

    @property
    def audit_batches(self) -> AsyncCollection[Doc]:
        """Where the audit writer stores its batches of AuditEvents (storage.audit_batches)."""
        return self.db[audit_batches.BATCHES]

    def declare_indexes(self, collection: str, models: Iterable[IndexModel]) -> None:
        self._extra_indexes.setdefault(collection, []).extend(models)

    def declared_indexes(self) -> dict[str, list[IndexModel]]:
        indexes: dict[str, list[IndexModel]] = {}
        for rtype in STORED_TYPES:
            newest = [(schema.LAST_UPDATED, DESCENDING), ("_id", DESCENDING)]
            indexes[rtype] = [IndexModel(newest, name="ts_id")]
            if rtype == audit_batches.AUDIT_EVENT:
                indexes[audit_batches.BATCHES] = list(audit_batches.INDEXES)
            if rtype in schema.APPEND_ONLY:
                continue  # no history copy (schema.APPEND_ONLY)
            indexes[schema.history_collection(rtype)] = [
                IndexModel([(schema.RESOURCE_ID, ASCENDING), (schema.VERSION, DESCENDING)], name="id_v",
                           unique=True),
                IndexModel(newest, name="ts_id"),
            ]
        for collection, models in self._extra_indexes.items():
            indexes.setdefault(collection, []).extend(models)
        return indexes

    async def ensure_indexes(self) -> None:
        existing = set(await self.db.list_collection_names())
        for collection, models in self.declared_indexes().items():
            if collection not in existing:
                # Collections cannot be created inside a transaction on older servers.
                await self.db.create_collection(collection, check_exists=False)
            else:
                have = {ix["name"] async for ix in await self.db[collection].list_indexes()}
                for name in RETIRED_INDEXES.get(collection, ()):
                    if name in have:
                        await self.db[collection].drop_index(name)
            await self.db[collection].create_indexes(models)
        if CONDITIONAL_LOCKS not in existing:
            await self.db.create_collection(CONDITIONAL_LOCKS, check_exists=False)

    async def in_transaction(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Runs `work(session)` in one transaction, retried on transient errors by the driver
        and on the database's internal errors here (INTERNAL_ERROR)."""
        for _ in range(INTERNAL_ERROR_ATTEMPTS):
            try:
                return await self._one_transaction(work)
            except OperationFailure as error:
                if error.code != INTERNAL_ERROR or error.has_error_label("UnknownTransactionCommitResult"):
                    raise
                log.warning("the database failed a transaction (%s): run again", error)
        raise DatabaseUnavailable.after(RETRY_AFTER_INTERNAL_ERROR,
                                        "The database failed the transaction; nothing was written; retry")

    async def _one_transaction(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        async def attempt(session: AsyncClientSession) -> T:
            # Nothing an earlier attempt (the driver re-runs `work`), or an earlier session
            # under the same id, staged or expected is this attempt's.
            self.recent.discard(session)
            self.changes.forget(session)
            return await work(session)

        async with self.client.start_session() as session:
            try:
                result: T = await session.with_transaction(
                    attempt,
                    read_concern=ReadConcern("snapshot"),
                    write_concern=WriteConcern("majority"),
                )
            except BaseException:
                self.recent.discard(session)
                self.changes.forget(session)
                raise
            self.recent.publish(session)
            # Answered once every process's next pull shows it (storage/changes.py).
            await self.changes.delivered(session)
            return result
