"""The Python API for in-process subscribers: our own workflows subscribe like anyone else."""

from __future__ import annotations

import asyncio

from fhir_server.context import RequestContext
from fhir_server.services import build_services
from subscriptions.channels import Notification
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import TOPIC, fast_settings, unique


def test_in_process_subscriber(mongodb_uri: str) -> None:
    settings = fast_settings(mongodb_uri, unique("fhir_inprocess_"))

    async def scenario() -> None:
        services = await build_services(settings)
        await services.subscriptions.start()
        try:
            u = unique()
            got: list[Notification] = []
            arrived = asyncio.Event()
            failures = [2]  # the handler fails twice: the same event comes again

            async def on_task(note: Notification) -> None:
                if failures[0]:
                    failures[0] -= 1
                    raise RuntimeError("workflow not ready")
                got.append(note)
                if len(got) >= 3:
                    arrived.set()

            sub_id = await services.subscriptions.subscribe(
                "router", on_task, topic=TOPIC + "task-status", filters=[f"Task?owner=Practitioner/{u}"])
            context = RequestContext.system(settings.base_url)
            for _ in range(60):
                stored = await services.repository.read(context, "Subscription", sub_id)
                if stored.resource["status"] == "active":
                    break
                await asyncio.sleep(0.1)
            ids = [(await services.repository.create(context, task(u))).stored.id for _ in range(3)]
            await services.repository.create(context, task(u, owner="Practitioner/someone-else"))
            await asyncio.wait_for(arrived.wait(), 20)
            assert [n.number for n in got] == [1, 2, 3]
            assert [n.focus for n in got] == [f"Task/{i}" for i in ids]
            assert all(n.resource and n.resource["id"] == i for n, i in zip(got, ids, strict=True))
            assert {n.interaction for n in got} == {"create"} and got[0].topic == TOPIC + "task-status"
            # Subscribing again (a restart) keeps the same Subscription and its numbering.
            assert await services.subscriptions.subscribe(
                "router", on_task, topic=TOPIC + "task-status", filters=[f"Task?owner=Practitioner/{u}"]) == sub_id
            await services.subscriptions.in_process.unsubscribe("router")
        finally:
            await services.close()

    asyncio.run(scenario())
