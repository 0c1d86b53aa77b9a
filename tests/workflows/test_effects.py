"""Exactly once in effect: a workflow's writes survive redelivery, restart and a second process
without doubling (counted by their identifiers), over the real server and database."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.config import WorkflowSettings
from fhir_server.context import RequestContext
from fhir_server.resource_types import STORED
from fhir_server.services import Services, build_services
from subscriptions.channels import Notification
from tests.conftest import RunningServer, free_port, make_settings
from tests.processes import ServerProcess
from tests.workflows.toy import (
    NAME,
    ThankRequester,
    communications,
    completed_task,
    create_task,
    effect_values,
    fast_settings,
    unique,
    wait_for,
)
from workflows import EFFECT_SYSTEM, Event

Doc = dict[str, Any]


async def redeliver(services: Services, task_id: str, times: int) -> None:
    """Hands the workflow the event of Task/<id> version 1 again, as a redelivery would."""
    assert services.workflows is not None
    stored = await services.repository.read(RequestContext.system(services.settings.base_url), "Task", task_id)
    note = Notification(f"in-process-{NAME}", None, 1, datetime.now(UTC), "create", "Task",
                        f"Task/{task_id}", stored.resource)
    workflow = services.workflows.workflows[NAME]
    for _ in range(times):
        await services.workflows.handle(workflow, note)


def test_a_redelivered_event_doubles_no_effect(mongodb_uri: str) -> None:
    settings = fast_settings(mongodb_uri, unique("fhir_wf_"))
    workflow = ThankRequester(fail_after_effect=2)  # no acknowledgement twice: delivered 3 times
    with RunningServer(settings, workflows=[workflow]), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        task_id = create_task(api)
        wait_for(lambda: workflow.calls >= 3)

        async def again() -> None:
            services = await build_services(settings, workflows=[ThankRequester()])
            try:
                await redeliver(services, task_id, 2)
            finally:
                await services.close()

        asyncio.run(again())
        found = communications(api, task_id)
        assert effect_values(found) == [f"{NAME}/Task/{task_id}/_history/1/1"]
        assert found[0]["recipient"][0]["reference"].startswith("Practitioner/")
        # The effect's Provenance: the engine acted, because of that version of the Task.
        provenance = api.get("/Provenance", params={"target": f"Communication/{found[0]['id']}"}).json()["entry"]
        assert len(provenance) == 1
        record = provenance[0]["resource"]
        assert record["entity"] == [{"role": "source", "what": {"reference": f"Task/{task_id}/_history/1"}}]
        # The engine's Device once Device is a stored type; until then, named by display.
        engine = ({"reference": "Device/coordination-engine"} if "Device" in STORED
                  else {"display": f"coordination engine ({NAME})"})
        assert record["agent"][0]["who"] == engine
        if "Device" in STORED:
            assert api.get("/Device/coordination-engine").json()["deviceName"][0]["name"] == "coordination engine"
        audit = api.get("/AuditEvent", params={"entity": f"Communication/{found[0]['id']}"}).json()
        assert len(audit["entry"]) == 1  # an AuditEvent per effect, none for the matched re-creates


def test_a_restart_between_effect_and_acknowledgement_doubles_nothing(mongodb_uri: str) -> None:
    settings = fast_settings(mongodb_uri, unique("fhir_wf_"))
    crashing = ThankRequester(hang_after_effect=True)
    with RunningServer(settings, workflows=[crashing]), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        task_id = create_task(api)
        wait_for(lambda: crashing.calls == 1)  # the effect is written; no acknowledgement ever
    restarted = ThankRequester()
    with RunningServer(settings, workflows=[restarted]), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        wait_for(lambda: restarted.calls >= 1)  # the event came again after the restart
        assert effect_values(communications(api, task_id)) == [f"{NAME}/Task/{task_id}/_history/1/1"]


def test_two_server_processes_write_each_effect_once(mongodb_uri: str) -> None:
    settings = fast_settings(mongodb_uri, unique("fhir_wf_"))
    first, second = ThankRequester(), ThankRequester()
    port = free_port()
    settings_b = settings.with_(port=port, base_url=f"http://127.0.0.1:{port}/fhir")
    with RunningServer(settings, workflows=[first]), RunningServer(settings_b, workflows=[second]), \
            httpx.Client(base_url=settings.base_url, timeout=30) as a, \
            httpx.Client(base_url=settings_b.base_url, timeout=30) as b:
        ids = [create_task(api) for api in (a, b) * 5]
        wait_for(lambda: all(len(communications(a, i)) == 1 for i in ids))

        async def both_at_once() -> None:
            # Two more processes handle the same events at the same moment.
            one = await build_services(settings, workflows=[ThankRequester()])
            two = await build_services(settings_b, workflows=[ThankRequester()])
            try:
                await asyncio.gather(*(redeliver(s, i, 1) for i in ids for s in (one, two)))
            finally:
                await one.close()
                await two.close()

        asyncio.run(both_at_once())
        values = [v for i in ids for v in effect_values(communications(b, i))]
        assert sorted(values) == sorted(f"{NAME}/Task/{i}/_history/1/1" for i in ids)
        everything = a.get("/Communication", params={"identifier": f"{EFFECT_SYSTEM}|", "_count": "100"}).json()
        assert len(everything.get("entry", [])) == len(ids)


def test_with_no_workflow_registered_the_engine_does_nothing(mongodb_uri: str) -> None:
    # Without the built-in workflows (FHIR_WORKFLOW_BUILTIN=0) and none of a deployment's.
    settings = make_settings(mongodb_uri, database=unique("fhir_wf_none_"),
                             workflows=WorkflowSettings(builtin=False))
    with RunningServer(settings) as server, httpx.Client(base_url=settings.base_url, timeout=30) as client:
        services = server.server.config.app.state.services  # type: ignore[attr-defined]
        assert services.workflows is not None and services.workflows.workflows == {}
        assert services.workflows.runner._task is None  # no timer polling
        assert client.get("/Subscription").json()["total"] == 0
        assert client.post("/Task", json=completed_task(unique())).status_code == 201
        assert client.get("/Communication").json()["total"] == 0


def test_sigkill_between_effect_and_acknowledgement_doubles_nothing(
        mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, mongo: MongoClient[Doc]) -> None:
    """A real server process (`fhir-server serve`, its workflow named by FHIR_WORKFLOW_MODULES)
    writes the effect and is SIGKILLed before acknowledging; a restarted server gets the event
    again and writes nothing more."""
    settings = fast_settings(mongodb_uri, unique("fhir_wf_kill_"))
    monkeypatch.setenv("FHIR_WORKFLOW_MODULES", "tests.workflows.toy:killed_after_effect")
    process = ServerProcess(mongodb_uri, settings.database, free_port())
    try:
        try:
            response = httpx.post(f"{process.base_url}/Task", json=completed_task(unique()), timeout=30)
            assert response.status_code == 201
        except httpx.HTTPError:
            pass  # killed before it answered: the Task is committed all the same
        process.process.wait(30)
        assert process.process.returncode == -signal.SIGKILL
    finally:
        process.stop()
    assert mongo[settings.database]["Communication"].count_documents({}) == 1  # the effect, before its ack
    monkeypatch.delenv("FHIR_WORKFLOW_MODULES")
    restarted = ThankRequester()
    with RunningServer(settings, workflows=[restarted]), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        tasks = api.get("/Task").json()["entry"]
        assert len(tasks) == 1
        task_id = tasks[0]["resource"]["id"]
        wait_for(lambda: restarted.calls >= 1)  # redelivered after the dead process's lease
        assert effect_values(communications(api, task_id)) == [f"{NAME}/Task/{task_id}/_history/1/1"]


def test_with_auth_on_the_effect_passes_the_access_decision_as_system(mongodb_uri: str) -> None:
    """With SMART and Consent enforced, the engine's effects are the server's own work: the
    access decision lets the SYSTEM principal write them, once."""
    settings = fast_settings(mongodb_uri, unique("fhir_wf_auth_")).with_(auth_enabled=True)

    async def scenario() -> None:
        services = await build_services(settings, workflows=[ThankRequester()])
        try:
            assert services.auth.enabled
            context = RequestContext.system(settings.base_url, "create")
            task = (await services.repository.create(context, completed_task(unique()))).stored
            await redeliver(services, task.id, 2)
            query = services.search.parse("Communication", [("based-on", f"Task/{task.id}")])
            page = await services.repository.search(RequestContext.system(settings.base_url, "search-type"), query)
            assert effect_values([e.resource for e in page.entries]) == [f"{NAME}/Task/{task.id}/_history/1/1"]
            effect = page.entries[0]
            assert Event(2, "create", "Communication", f"Communication/{effect.id}", effect.resource).is_effect
            assert not Event(1, "create", "Task", f"Task/{task.id}", task.resource).is_effect
        finally:
            await services.close()

    asyncio.run(scenario())
