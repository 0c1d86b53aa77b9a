"""The repository's single writes (REST create, update, patch, delete and their conditional
forms): each is one unit of work of the write pipeline (fhir_server.storage.pipeline), a
plan of one resource and its commit, run by the one retry helper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.hooks import Change, HookRegistry
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.pipeline import Committer, Planned, Planner, Versions, run_unit
from fhir_server.storage.pipeline.group import ATTRIBUTE as GROUP_ATTRIBUTE
from fhir_server.storage.pipeline.group import CommitGroup
from fhir_server.storage.records import WriteOutcome
from fhir_server.storage.searches import SearchPipeline

Criteria = list[tuple[str, str]]
Plan = Callable[[AsyncClientSession], Awaitable[Planned]]


class WritePipeline(SearchPipeline):
    def __init__(self, database: Database, hooks: HookRegistry, settings: Settings,
                 search: SearchEngine) -> None:
        super().__init__(database, hooks, settings, search)
        self.versions = Versions(search)
        self.planner = Planner(self, self.versions)
        self.committer = Committer(database, hooks, self.versions)

    def commit_group(self) -> CommitGroup:
        """A group commit for the independent writes of one batch (pipeline/group.py)."""
        async def commit_many(session: AsyncClientSession,
                              units: list[tuple[RequestContext, Planned]]) -> list[list[Change]]:
            return await self.committer.commit_many(session, [(c, [p]) for c, p in units])

        return CommitGroup(self.database.in_transaction, commit_many)

    async def _unit(self, context: RequestContext, plan: Plan, what: str, *,
                    groupable: bool = False) -> Planned:
        """Plans and commits one write. `groupable`: the write is confined to one resource
        named by id (no conditional criteria, no lock), so a batch may commit it together
        with its other entries (pipeline/group.py); alone otherwise, and whenever the group
        sends it back."""
        group = context.attributes.get(GROUP_ATTRIBUTE) if groupable else None
        grouped = await group.submit(context, plan) if isinstance(group, CommitGroup) else None
        if grouped is not None:
            planned, changes = grouped
        else:
            async def work(session: AsyncClientSession) -> tuple[Planned, Any]:
                planned = await plan(session)
                return planned, await self.committer.commit(session, context, [planned])

            planned, changes = await run_unit(self.database, work, what)
        await self.committer.after_commit(context, changes)
        return planned

    async def _outcome(self, context: RequestContext, planned: Planned) -> WriteOutcome:
        if planned.version is not None:
            return WriteOutcome(planned.version.stored, created=planned.created)
        assert planned.previous is not None
        stored = StoredResource.from_current(planned.resource_type, planned.previous)
        if planned.outcome == "matched":
            # A conditional create's match leaves the server like a read does.
            stored = await self._released_or_forbidden(context, stored)
        return WriteOutcome(stored, created=False, changed=False)

    async def create(self, context: RequestContext, resource: dict[str, Any], *,
                     if_none_exist: Criteria | None = None) -> WriteOutcome:
        planned = await self._unit(context, lambda s: self.planner.create(
            s, context, resource, if_none_exist=if_none_exist), f"{resource['resourceType']}",
            groupable=if_none_exist is None)
        return await self._outcome(context, planned)

    async def update(self, context: RequestContext, resource_type: str, resource_id: str,
                     resource: dict[str, Any], *, if_match: int | None = None) -> WriteOutcome:
        """PUT: update, or update-as-create when the id is new (or was deleted)."""
        planned = await self._unit(context, lambda s: self.planner.update(
            s, context, resource_type, resource_id, resource, if_match=if_match),
            f"{resource_type}/{resource_id}", groupable=True)
        return await self._outcome(context, planned)

    async def conditional_update(self, context: RequestContext, resource_type: str,
                                 criteria: Criteria, resource: dict[str, Any], *,
                                 if_match: int | None = None) -> WriteOutcome:
        """PUT Type?criteria: no match creates, one match updates it, several are 412."""
        planned = await self._unit(context, lambda s: self.planner.conditional_update(
            s, context, resource_type, criteria, resource, if_match=if_match), resource_type)
        return await self._outcome(context, planned)

    async def patch(self, context: RequestContext, resource_type: str, resource_id: str,
                    operations: Any, *, if_match: int | None = None) -> WriteOutcome:
        planned = await self._unit(context, lambda s: self.planner.patch(
            s, context, resource_type, resource_id, operations, if_match=if_match),
            f"{resource_type}/{resource_id}", groupable=True)
        return await self._outcome(context, planned)

    async def delete(self, context: RequestContext, resource_type: str, resource_id: str, *,
                     if_match: int | None = None) -> StoredResource | None:
        """Deletes; returns the tombstone, or None when there was nothing to delete."""
        planned = await self._unit(context, lambda s: self.planner.delete(
            s, context, resource_type, resource_id, if_match=if_match),
            f"{resource_type}/{resource_id}", groupable=True)
        return planned.version.stored if planned.version is not None else None

    async def conditional_delete(self, context: RequestContext, resource_type: str,
                                 criteria: Criteria) -> StoredResource | None:
        """DELETE Type?criteria: one match is deleted; none deletes nothing; several are 412."""
        planned = await self._unit(context, lambda s: self.planner.conditional_delete(
            s, context, resource_type, criteria), resource_type)
        return planned.version.stored if planned.version is not None else None

