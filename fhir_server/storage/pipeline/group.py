"""Group commit: the independent writes of one batch Bundle share transactions.

A batch's entries are separate interactions (each its own request, access decision, hooks,
response), but committing each alone costs the database a transaction and a few commands per
entry: a 1000-entry batch cost nine times the same entries as a transaction. So the entries
of a batch that run at the same time — each confined to one resource named by id (batch.py's
waves), none conditional — hand their unit of work to the batch's `CommitGroup` instead of
running it alone. Whichever entry finds no commit under way leads: it takes every unit
waiting, and in ONE transaction plans each exactly as it would be planned alone (same
planner, same BEFORE_* hooks, same context), writes all the planned versions together (one
bulk write per type), and runs the IN_TRANSACTION hooks per entry with that entry's own
context and changes. Entries arriving meanwhile wait for the next round: the group grows
with the load, and an entry alone is committed at once.

What an entry's plan refuses (a FhirError: 403, 412, 422 ...) is that entry's answer alone;
the others still commit. If the round's transaction fails otherwise (a lost race, any
database error), nothing of it was written, and every entry of that round runs alone, as
if there were no group: a group never changes an answer, only what it costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.hooks import Change
from fhir_server.storage.pipeline.versions import Planned

# Where an in-process batch entry request carries its batch's group (the ASGI scope: no
# client can set it; fhir_server.api.context copies it to the RequestContext).
SCOPE_KEY = "fhir_server.commit_group"
ATTRIBUTE = "commit_group"
# At most this many units in one transaction (bounds its size and the work lost to a retry).
MAX_UNITS = 64

Plan = Callable[[AsyncClientSession], Awaitable[Planned]]
# Writes the units' planned versions in one transaction and runs their IN_TRANSACTION hooks:
# (session, [(context, planned)]) -> each unit's changes.
CommitMany = Callable[[AsyncClientSession, list[tuple[RequestContext, Planned]]], Awaitable[list[list[Change]]]]
InTransaction = Callable[[Callable[[AsyncClientSession], Awaitable[Any]]], Awaitable[Any]]


@dataclass
class _Unit:
    context: RequestContext
    plan: Plan
    done: asyncio.Future[tuple[Planned, list[Change]] | None]
    error: FhirError | None = field(default=None)


class CommitGroup:
    """The group of one batch. `in_transaction`: runs a callback in one transaction (the
    driver re-runs it on transient errors); `commit_many`: the pipeline's commit of many units."""

    def __init__(self, in_transaction: InTransaction, commit_many: CommitMany) -> None:
        self._in_transaction = in_transaction
        self._commit_many = commit_many
        self._waiting: list[_Unit] = []
        self._leading = False
        self.rounds = 0  # transactions committed (for tests and benchmarks)
        self.grouped = 0  # units committed in them

    async def submit(self, context: RequestContext, plan: Plan) -> tuple[Planned, list[Change]] | None:
        """Plans and commits the unit with others; answers its plan and changes, raises its
        plan's FhirError, or answers None: run it alone (its round failed)."""
        unit = _Unit(context, plan, asyncio.get_running_loop().create_future())
        self._waiting.append(unit)
        if not self._leading:
            self._leading = True
            try:
                # Let the entries started with this one reach the group first.
                await asyncio.sleep(0)
                while self._waiting:
                    units, self._waiting = self._waiting[:MAX_UNITS], self._waiting[MAX_UNITS:]
                    await self._round(units)
            finally:
                self._leading = False
                for left in self._waiting:  # only if a round raised past its handler
                    if not left.done.done():
                        left.done.set_result(None)
                self._waiting = []
        result = await unit.done
        if unit.error is not None:
            raise unit.error
        return result

    async def _round(self, units: list[_Unit]) -> None:
        async def work(session: AsyncClientSession) -> list[tuple[_Unit, Planned, list[Change]]]:
            planned: list[tuple[_Unit, Planned]] = []
            for unit in units:
                unit.error = None  # the driver may run this again: plan afresh
                try:
                    planned.append((unit, await unit.plan(session)))
                except FhirError as error:
                    unit.error = error
            changes = await self._commit_many(session, [(u.context, p) for u, p in planned])
            return [(u, p, c) for (u, p), c in zip(planned, changes, strict=True)]

        committed: list[tuple[_Unit, Planned, list[Change]]] = []
        try:
            committed = await self._in_transaction(work)
        except Exception:
            # Nothing of the round was written: each unit runs alone, as without a group.
            for unit in units:
                unit.error = None
            committed = []
        finally:
            # Whatever happens to the leader (even its cancellation), no unit waits forever:
            # one without an answer here runs alone (or raises its plan's refusal).
            answered = {id(u): (p, c) for u, p, c in committed}
            for unit in units:
                if not unit.done.done():
                    unit.done.set_result(answered.get(id(unit)))
        if committed:
            self.rounds += 1
            self.grouped += len(committed)
