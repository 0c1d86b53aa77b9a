"""The engine: workflows are in-process subscribers whose writes go through `Effects`.

    class Thanks(Workflow):
        name = "thanks"
        criteria = "Task?status=completed"
        async def on_event(self, event, effects): await effects.create({...})

A workflow listens to a SubscriptionTopic (`topic` + `filters`) or R4 `criteria`; the
subscription machinery delivers its events durably, numbered, in order, at least once
(subscriptions.inprocess). The engine hands each event to `on_event` with an `Effects` bound
to (workflow, event), and each due timer of the workflow to `on_timer`, bound to (workflow,
timer key): effects are therefore exactly once however often either arrives.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fhir_server.config import WorkflowSettings
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.resource_types import STORED
from fhir_server.storage.repository import Repository
from subscriptions.channels import Notification
from subscriptions.service import SubscriptionService
from workflows.definitions import Definitions
from workflows.effects import EFFECT_SYSTEM, Effects
from workflows.timers import Timer, TimerHandler, TimerRunner, Timers

log = logging.getLogger(__name__)
Doc = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One subscription event as a workflow sees it."""

    number: int  # the event's number on the workflow's Subscription
    interaction: str  # create, update, delete
    resource_type: str
    focus: str | None  # "Type/id"
    resource: Doc | None  # the version's content (None for a delete)

    @property
    def version(self) -> str | None:
        """`Type/id/_history/v` of the triggering version, when known."""
        meta = (self.resource or {}).get("meta") or {}
        if self.focus and meta.get("versionId"):
            return f"{self.focus}/_history/{meta['versionId']}"
        return None

    @property
    def is_effect(self) -> bool:
        """Whether the resource is some workflow's effect (a workflow listening to what
        workflows write skips these, or it would answer its own effects)."""
        identifiers = (self.resource or {}).get("identifier")
        return isinstance(identifiers, list) and any(
            isinstance(i, dict) and i.get("system") == EFFECT_SYSTEM for i in identifiers)

    @property
    def id(self) -> str:
        """The trigger's id in effect identifiers: its version (the same on every delivery
        and on a recreated Subscription), else its number."""
        return self.version or f"event-{self.number}"

    @classmethod
    def of(cls, note: Notification) -> Event:
        return cls(note.number, note.interaction, note.resource_type, note.focus, note.resource)


class Workflow:
    """Base of a workflow. Subclasses set `name` and `topic` (+ `filters`) or `criteria`."""

    name: ClassVar[str] = ""
    topic: ClassVar[str | None] = None
    criteria: ClassVar[str | None] = None
    filters: ClassVar[tuple[str, ...]] = ()
    # The deployment's definitions file, set by the engine when the workflow is added.
    definitions: Definitions = Definitions()

    async def on_event(self, event: Event, effects: Effects) -> None:
        raise NotImplementedError

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        """A timer this workflow scheduled is due (`effects.schedule`)."""

    def bind(self, engine: Engine) -> None:
        """Called once, when an engine adds this workflow: the definitions and the repository
        it reads are that engine's."""


def load_workflows(specs: Iterable[str]) -> list[Workflow]:
    """Workflows named "package.module:factory" (FHIR_WORKFLOW_MODULES); the factory answers
    a Workflow or a list of them. A wrong name stops start-up, naming it."""
    found: list[Workflow] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"workflow module {spec!r}: {exc}") from None
        made = factory()
        for workflow in made if isinstance(made, list | tuple) else [made]:
            if not isinstance(workflow, Workflow):
                raise ValueError(f"workflow module {spec!r} made {type(workflow).__name__}, not a Workflow")
            found.append(workflow)
    return found


DEVICE_ID = "coordination-engine"


def engine_device() -> Doc:
    return {
        "resourceType": "Device",
        "id": DEVICE_ID,
        "identifier": [{"system": EFFECT_SYSTEM, "value": "engine"}],
        "status": "active",
        "deviceName": [{"name": "coordination engine", "type": "user-friendly-name"}],
    }


class Engine:
    """Registers the workflows as in-process subscribers and runs their timers."""

    def __init__(self, settings: WorkflowSettings, base_url: str, repository: Repository,
                 subscriptions: SubscriptionService, timers: Timers, definitions: Definitions,
                 workflows: Sequence[Workflow] = ()) -> None:
        self.settings = settings
        self.base_url = base_url
        self.repository = repository
        self.subscriptions = subscriptions
        self.timers = timers
        self.definitions = definitions
        self.workflows: dict[str, Workflow] = {}
        for workflow in workflows:
            self.add(workflow)
        self.runner = TimerRunner(timers, self._timer_handler, settings.timer_poll)
        self.device: str | None = None

    def add(self, workflow: Workflow) -> None:
        if not workflow.name or "/" in workflow.name or workflow.name in self.workflows:
            raise ValueError(f"workflow name {workflow.name!r} is empty, has '/', or is taken")
        if (workflow.topic is None) == (workflow.criteria is None):
            raise ValueError(f"workflow {workflow.name!r}: listen to either a topic or criteria")
        self.workflows[workflow.name] = workflow
        workflow.definitions = self.definitions
        workflow.bind(self)

    def effects(self, workflow: str, trigger: str, source: str | None = None) -> Effects:
        return Effects(self.repository, self.base_url, workflow, trigger, source=source,
                       device=self.device, timers=self.timers)

    async def handle(self, workflow: Workflow, note: Notification) -> None:
        """One delivery of one event (again on a redelivery)."""
        event = Event.of(note)
        await workflow.on_event(event, self.effects(workflow.name, event.id, event.version))

    def _timer_handler(self, name: str) -> TimerHandler | None:
        workflow = self.workflows.get(name)
        if workflow is None:
            return None

        async def fire(timer: Timer) -> None:
            # A timer scheduled with a `source` (the version it waits about) names it as the
            # entity of its effects' Provenance, as an event's effects name their trigger.
            source = timer.payload.get("source")
            await workflow.on_timer(timer, self.effects(name, f"timer/{timer.key}",
                                                        source if isinstance(source, str) else None))

        return fire

    async def _ensure_device(self) -> None:
        """The engine's identity: its Device, when Device is a stored type (else Provenance
        names it by display)."""
        reference = self.settings.device
        if not reference or "Device" not in STORED:
            return
        if reference == f"Device/{DEVICE_ID}":
            context = RequestContext.system(self.base_url, "update")
            try:
                await self.repository.read(context, "Device", DEVICE_ID)
            except FhirError:
                await self.repository.update(context, "Device", DEVICE_ID, engine_device())
        self.device = reference

    async def start(self) -> None:
        if not self.workflows:
            return  # nothing registered: no Subscriptions, no timer polling
        await self._ensure_device()
        for workflow in self.workflows.values():
            async def handler(note: Notification, workflow: Workflow = workflow) -> None:
                await self.handle(workflow, note)

            await self.subscriptions.subscribe(workflow.name, handler, topic=workflow.topic,
                                               criteria=workflow.criteria, filters=list(workflow.filters))
        self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()
