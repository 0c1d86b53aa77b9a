"""The Python API for in-process subscribers: our own workflows subscribe like anyone else."""

from __future__ import annotations

import asyncio

from fhir_server.context import RequestContext
from fhir_server.services import Services, build_services
from subscriptions.channels import Notification
from tests.helpers import PATIENCE
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
            for _ in range(int(60 * PATIENCE)):
                stored = await services.repository.read(context, "Subscription", sub_id)
                if stored.resource["status"] == "active":
                    break
                await asyncio.sleep(0.1)
            ids = [(await services.repository.create(context, task(u))).stored.id for _ in range(3)]
            await services.repository.create(context, task(u, owner="Practitioner/someone-else"))
            await asyncio.wait_for(arrived.wait(), 20 * PATIENCE)
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


def test_a_subscription_without_a_recorded_owner_delivers_nothing(mongodb_uri: str) -> None:
    """A bug that loses the owner must not open the record: no owner, no reader, no delivery.
    A second Subscription that keeps its owner shows the event was there to deliver."""
    settings = fast_settings(mongodb_uri, unique("fhir_ownerless_"))

    async def scenario() -> None:
        u = unique()
        lost: list[Notification] = []
        kept: list[Notification] = []
        arrived = asyncio.Event()

        async def on_lost(note: Notification) -> None:
            lost.append(note)

        async def on_kept(note: Notification) -> None:
            kept.append(note)
            arrived.set()

        async def subscribe(services: Services) -> tuple[str, str]:
            topic, filters = TOPIC + "task-status", [f"Task?owner=Practitioner/{u}"]
            return (await services.subscriptions.subscribe("lost", on_lost, topic=topic, filters=filters),
                    await services.subscriptions.subscribe("kept", on_kept, topic=topic, filters=filters))

        services = await build_services(settings)
        await services.subscriptions.start()
        try:
            first = await subscribe(services)
            context = RequestContext.system(settings.base_url)
            for sub_id in first:
                for _ in range(60):
                    stored = await services.repository.read(context, "Subscription", sub_id)
                    if stored.resource["status"] == "active":
                        break
                    await asyncio.sleep(0.1)
        finally:
            await services.close()
        # The owner of one is lost (a bug, an old record); the server starts again.
        services = await build_services(settings)
        await services.database.db["subscription_state"].update_one({"_id": first[0]}, {"$unset": {"owner": 1}})
        await services.subscriptions.start()
        try:
            assert await subscribe(services) == first
            await services.repository.create(RequestContext.system(settings.base_url), task(u))
            await asyncio.wait_for(arrived.wait(), 20 * PATIENCE)
            await asyncio.sleep(1)  # a few more dispatcher rounds
            assert len(kept) == 1 and lost == []
        finally:
            await services.close()

    asyncio.run(scenario())
