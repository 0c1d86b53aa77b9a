"""`commit`: the second step of every write. Stores a unit's planned versions inside its
transaction and runs the IN_TRANSACTION hooks; after the commit, the AFTER_COMMIT hooks.

Per resource type one bulk write of the current documents (a replace is conditional on the
previous version: a moved version is `StaleVersion`, retried by retry.py) and one
insert_many of the history documents. The IN_TRANSACTION hooks get all the unit's changes at
once and a `SessionWriter`: what they record about the changes (Provenance, AuditEvent) is
stored by this same commit, in the same transaction, again with one bulk write per type, and
then passes the IN_TRANSACTION hooks itself (its outbox event) unless it asked not to. What
hooks ask to insert last (`insert_last`: the outbox events) goes in one insert per collection
after every round. Once the transaction committed, the history documents written are served
from memory to whoever reads them back (storage/recent.py).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from pymongo import InsertOne, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.write_concern import WriteConcern

from fhir_server.context import RequestContext
from fhir_server.errors import MethodNotAllowed
from fhir_server.hooks import Change, HookRegistry, Pointcut
from fhir_server.storage.database import Database
from fhir_server.storage.inserts import insert_new
from fhir_server.storage.outbox import OUTBOX
from fhir_server.storage.pipeline.retry import StaleVersion
from fhir_server.storage.pipeline.versions import Doc, NewVersion, Planned, Versions
from fhir_server.storage.schema import APPEND_ONLY

# Records about records about changes: Provenance has an outbox event, and there it stops.
MAX_ROUNDS = 3


class SessionWriter:
    """Given to IN_TRANSACTION hooks: new resources they write about the changes, stored by
    the commit that runs them (never by calling back into the repository)."""

    def __init__(self, versions: Versions) -> None:
        self.versions = versions
        self._pending: list[tuple[NewVersion, bool]] = []
        self._last: dict[str, list[Doc]] = {}

    def create(self, resource_type: str, resource: dict[str, Any], *, hooks: bool = True) -> NewVersion:
        """Queues version 1 of `resource` (its own `id`, or a new one). `hooks=False`: it
        passes no IN_TRANSACTION hook (an AuditEvent has no outbox event)."""
        given = resource.get("id")
        resource_id = given if isinstance(given, str) else str(uuid.uuid4())
        version = self.versions.build(resource_type, resource_id, resource, None, "create")
        self._pending.append((version, hooks))
        return version

    def take(self) -> list[tuple[NewVersion, bool]]:
        pending, self._pending = self._pending, []
        return pending

    def insert_last(self, collection: str, docs: list[Doc]) -> None:
        """Documents the commit inserts after every other write of the transaction, with
        one insert per collection for all its rounds and units (the outbox's events: a
        change and the Provenance recording it cost one insert, not two)."""
        self._last.setdefault(collection, []).extend(docs)

    def take_last(self) -> dict[str, list[Doc]]:
        last, self._last = self._last, {}
        return last


class Committer:
    def __init__(self, database: Database, hooks: HookRegistry, versions: Versions) -> None:
        self.database = database
        self.hooks = hooks
        self.versions = versions

    async def commit(self, session: AsyncClientSession, context: RequestContext,
                     planned: list[Planned]) -> list[Change]:
        """Writes every planned version (each resource once) in `session`; returns the changes."""
        return (await self.commit_many(session, [(context, planned)]))[0]

    async def commit_many(self, session: AsyncClientSession,
                          units: list[tuple[RequestContext, list[Planned]]]) -> list[list[Change]]:
        """Commits several units in one transaction (a batch's group commit, group.py): all
        their versions in one bulk write per type, then the IN_TRANSACTION hooks of each unit
        with its own context, so each is recorded as if committed alone. Returns each unit's
        changes."""
        written = [[(p.previous, p.version) for p in planned if p.version is not None]
                   for _, planned in units]
        for previous, version in (w for unit in written for w in unit):
            if previous is not None and version.change.resource_type in APPEND_ONLY:
                # Below every configuration: with no history copy, a second version would
                # erase the first (the audit interceptor refuses it earlier, when it is on).
                raise MethodNotAllowed(f"{version.change.resource_type} resources are append-only: "
                                       f"they cannot be updated or deleted")
        stored = [version for unit in written for _, version in unit]
        await self._write(session, [w for unit in written for w in unit])
        changes = [[version.change for _, version in unit] for unit in written]
        writers = [SessionWriter(self.versions) for _ in units]
        hooked = changes
        last: dict[str, list[Doc]] = defaultdict(list)  # in the order the hooks gave them
        for _ in range(MAX_ROUNDS):
            for (context, _), writer, unit_changes in zip(units, writers, hooked, strict=True):
                if unit_changes:
                    await self.hooks.call(Pointcut.IN_TRANSACTION, context=context, changes=unit_changes,
                                          session=session, db=self.database.db, writer=writer)
                for collection, docs in writer.take_last().items():
                    last[collection] += docs
            records = [writer.take() for writer in writers]
            if not any(records):
                break
            await self._write(session, [(None, version) for unit in records for version, _ in unit])
            stored += [version for unit in records for version, _ in unit]
            hooked = [[version.change for version, hooks in unit if hooks] for unit in records]
        for collection, docs in last.items():
            await self.database.db[collection].insert_many(docs, session=session)
        # The write answers once this process's change feed delivered them (storage/changes.py).
        self.database.changes.expect(session, last.get(OUTBOX, []))
        # Served once the transaction has committed (Database.in_transaction publishes them):
        # the matcher and the notification's read need not read them back.
        self.database.recent.stage(session, [(v.change.resource_type, v.history) for v in stored
                                             if v.history is not None])
        return changes

    async def after_commit(self, context: RequestContext, changes: list[Change]) -> None:
        for change in changes:
            await self.hooks.call(Pointcut.AFTER_COMMIT, context=context, change=change)

    async def _write(self, session: AsyncClientSession,
                     versions: list[tuple[Doc | None, NewVersion]]) -> None:
        by_type: dict[str, list[tuple[Doc | None, NewVersion]]] = defaultdict(list)
        for previous, version in versions:
            by_type[version.change.resource_type].append((previous, version))
        for rtype, items in by_type.items():
            current, history = self.database.current(rtype), self.database.history(rtype)
            if len(items) == 1:
                # One resource (every single REST write): the plain commands cost less.
                await _write_one(current, history, *items[0], session)
                continue
            ops: list[Any] = [
                InsertOne(version.current) if previous is None
                else ReplaceOne({"_id": previous["_id"], "v": previous["v"]}, version.current)
                for previous, version in items
            ]
            result = await current.bulk_write(ops, ordered=False, session=session)
            if result.inserted_count + result.matched_count != len(ops):
                raise StaleVersion()
            copies = [version.history for _, version in items if version.history is not None]
            if copies:
                await history.insert_many(copies, ordered=False, session=session)


async def _write_one(current: AsyncCollection[Doc], history: AsyncCollection[Doc],
                     previous: Doc | None, version: NewVersion, session: AsyncClientSession) -> None:
    if previous is None:
        await current.insert_one(version.current, session=session)
    else:
        result = await current.replace_one(
            {"_id": previous["_id"], "v": previous["v"]}, version.current, session=session)
        if result.matched_count != 1:
            raise StaleVersion()
    if version.history is not None:
        await history.insert_one(version.history, session=session)


async def store_new(database: Database, resource_type: str, versions: list[NewVersion],
                    write_concern: WriteConcern) -> None:
    """Stores new resources outside a transaction, ignoring those stored already: for
    append-only records replayed after a crash (the audit writer's batches)."""
    if not versions:
        return
    for collection, docs in (
        (database.current(resource_type), [v.current for v in versions]),
        (database.history(resource_type), [v.history for v in versions if v.history is not None]),
    ):
        await insert_new(collection, docs, write_concern)
