"""How a workflow writes: every effect exactly once, by an identifier derived from its trigger.

Each resource a workflow writes for one trigger (an event, or a timer) is numbered in the order
the workflow writes it, and carries the identifier

    urn:fhir-server:workflow-effect | <workflow>/<trigger>/<n>

It is written by conditional create (If-None-Exist on that identifier) through the
repository's one write pipeline, as the SYSTEM principal with the engine's `Automation`
(Provenance: agent = the engine's Device, entity = the triggering version). A redelivered
event, a restart or SIGKILL between the effect and the acknowledgement, or a second process
handling the same trigger finds the effect already there and writes nothing (the conditional
create's canonical lock makes two concurrent writers one). A workflow therefore must write
the same effects in the same order for the same trigger: decide from the trigger, not from
the clock.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from fhir_server.context import Automation, RequestContext
from fhir_server.storage.repository import Repository, WriteOutcome
from workflows.timers import Timers, now

Doc = dict[str, Any]
EFFECT_SYSTEM = "urn:fhir-server:workflow-effect"


def effect_identifier(workflow: str, trigger: str, n: int | str) -> Doc:
    return {"system": EFFECT_SYSTEM, "value": f"{workflow}/{trigger}/{n}"}


class Effects:
    """The writes of one workflow for one trigger. `trigger`: the triggering event's id (the
    version `Type/id/_history/v`, stable across redeliveries and Subscription renumbering) or
    `timer/<key>`; `source`: the version Provenance names as the entity, when there is one."""

    def __init__(self, repository: Repository, base_url: str, workflow: str, trigger: str,
                 *, source: str | None = None, device: str | None = None,
                 timers: Timers | None = None) -> None:
        self.repository = repository
        self.base_url = base_url
        self.workflow = workflow
        self.trigger = trigger
        self.automation = Automation(workflow, source, device)
        self.timers = timers
        self.written: list[WriteOutcome] = []
        self._n = 0

    @property
    def device(self) -> str | None:
        return self.automation.device

    def context(self, interaction: str) -> RequestContext:
        return RequestContext.system(self.base_url, interaction, self.automation)

    async def create(self, resource: Doc, *, name: str | None = None) -> WriteOutcome:
        """Creates `resource` once for this trigger. `name`: a stable name for this effect
        instead of its number (when a workflow's effects vary in number)."""
        self._n += 1
        identifier = effect_identifier(self.workflow, self.trigger, name or self._n)
        resource = copy.deepcopy(resource)
        resource["identifier"] = [*resource.get("identifier", []), identifier]
        outcome = await self.repository.create(
            self.context("create"), resource,
            if_none_exist=[("identifier", f"{identifier['system']}|{identifier['value']}")])
        self.written.append(outcome)
        return outcome

    def timer_key(self, subject: str) -> str:
        """The key of this workflow's timer about `subject` (e.g. `Task/1/received`)."""
        return f"{self.workflow}/{subject}"

    async def schedule(self, subject: str, when: datetime | timedelta, payload: Doc | None = None) -> str:
        """Schedules this workflow's timer about `subject` (once: the key is idempotent);
        `when`: a due time, or a delay from now. Answers the timer's key."""
        assert self.timers is not None, "these effects have no timers"
        key = self.timer_key(subject)
        due = now() + when if isinstance(when, timedelta) else when
        await self.timers.schedule(key, due, payload, workflow=self.workflow)
        return key

    async def cancel(self, subject: str) -> bool:
        """Cancels this workflow's timer about `subject` (what it waited for happened)."""
        assert self.timers is not None, "these effects have no timers"
        return await self.timers.cancel(self.timer_key(subject))
