"""A toy workflow for the engine's proofs: a Task completed → a Communication to its requester
(and, when asked, a timer whose firing sends a second one)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

import httpx

from fhir_server.config import Settings, SubscriptionSettings, WorkflowSettings
from tests.conftest import make_settings
from tests.helpers import PATIENCE
from workflows import EFFECT_SYSTEM, Effects, Event, Timer, Workflow

Doc = dict[str, Any]
NAME = "thank-requester"

FAST = SubscriptionSettings(retry_initial=0.05, retry_max=0.25, retry_window=3600.0, delivery_timeout=2.0,
                            lease_ttl=1.0, scan_interval=0.2, poll_interval=0.2)


def fast_settings(mongodb_uri: str, database: str, **workflow: Any) -> Settings:
    # Provenance and audit on (dev mode has them off): the effects' records are part of the proof.
    return make_settings(mongodb_uri, database=database, subscriptions=FAST,
                         # Without the shipped workflows unless the test asks (builtin=True).
                         workflows=WorkflowSettings(**{"timer_poll": 0.05, "builtin": False, **workflow}),
                         extra={"provenance": "on", "audit": "on"})


def unique(prefix: str = "x") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def completed_task(u: str) -> Doc:
    return {"resourceType": "Task", "status": "completed", "intent": "order",
            "for": {"reference": f"Patient/{u}"}, "requester": {"reference": f"Practitioner/{u}"},
            "owner": {"reference": f"Practitioner/{u}-owner"}}


class ThankRequester(Workflow):
    name: ClassVar[str] = NAME
    criteria: ClassVar[str | None] = "Task?status=completed"

    def __init__(self, *, hang_after_effect: bool = False, fail_after_effect: int = 0,
                 remind_after: timedelta | None = None, kill_after_effect: bool = False) -> None:
        self.kill_after_effect = kill_after_effect
        self.hang_after_effect = hang_after_effect  # a crash between effect and acknowledgement
        self.fail_after_effect = fail_after_effect  # raise (no acknowledgement) this many times
        self.remind_after = remind_after
        self.calls = 0
        self.timer_calls = 0
        self.effected = asyncio.Event()

    async def on_event(self, event: Event, effects: Effects) -> None:
        task = event.resource
        if task is None:
            return
        await effects.create({
            "resourceType": "Communication", "status": "completed",
            "basedOn": [{"reference": event.focus}], "recipient": [task["requester"]],
            "payload": [{"contentString": "Your task was completed"}]})
        if self.remind_after is not None:
            await effects.schedule(f"{event.focus}/reminder", self.remind_after, {"task": event.focus})
        self.calls += 1
        self.effected.set()
        if self.hang_after_effect:
            await asyncio.Event().wait()
        if self.kill_after_effect:
            os.kill(os.getpid(), signal.SIGKILL)  # dies between the effect and the acknowledgement
        if self.fail_after_effect:
            self.fail_after_effect -= 1
            raise RuntimeError("crashed before the acknowledgement")

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        self.timer_calls += 1
        await effects.create({
            "resourceType": "Communication", "status": "completed",
            "basedOn": [{"reference": timer.payload["task"]}],
            "payload": [{"contentString": "Reminder"}]})


def killed_after_effect() -> Workflow:
    """For FHIR_WORKFLOW_MODULES=tests.workflows.toy:killed_after_effect (a server process)."""
    return ThankRequester(kill_after_effect=True)


def effect_values(communications: list[Doc]) -> list[str]:
    return [i["value"] for c in communications for i in c.get("identifier", []) if i.get("system") == EFFECT_SYSTEM]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout * PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def communications(api: httpx.Client, task_id: str) -> list[Doc]:
    bundle = api.get("/Communication", params={"based-on": f"Task/{task_id}", "_count": "100"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def create_task(api: httpx.Client) -> str:
    response = api.post("/Task", json=completed_task(unique()))
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id
