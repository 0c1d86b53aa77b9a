"""`Booker.release_cancelled` (the scheduling workflow calls it on every cancelled version)
runs no transaction when there is nothing to give back: after `$cancel` every Slot is free
already. When a Slot is still taken, it frees it in one transaction as before."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import monitoring

from fhir_server.context import RequestContext
from fhir_server.operations.scheduling.booking import Booker
from fhir_server.services import build_services
from tests.conftest import make_settings

Doc = dict[str, Any]


class Transactions(monitoring.CommandListener):
    """Counts the transactions the server's client starts."""

    def __init__(self) -> None:
        self.started_count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:  # type: ignore[override]
        if event.command.get("startTransaction"):
            self.started_count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_release_cancelled_runs_no_transaction_when_every_slot_is_free(mongodb_uri: str) -> None:
    listener = Transactions()

    async def run() -> tuple[list[int], list[bool], list[str]]:
        services = await build_services(make_settings(mongodb_uri, database="fhir_sched_release"),
                                        listeners=[listener])
        try:
            system = RequestContext.system(services.settings.base_url, "create")
            free = (await services.repository.create(system, slot("free"))).stored.id
            busy = (await services.repository.create(system, slot("busy"))).stored.id
            booker = Booker(services.repository, services.settings.base_url)
            counts, answers = [], []
            for slot_id in (free, busy, busy):
                appointment = {"resourceType": "Appointment", "status": "cancelled",
                               "slot": [{"reference": f"Slot/{slot_id}"}],
                               "participant": [{"actor": {"reference": "Patient/p"}, "status": "accepted"}]}
                aid = (await services.repository.create(system, appointment)).stored.id
                before = listener.started_count
                answers.append(await booker.release_cancelled(aid))
                counts.append(listener.started_count - before)
            statuses = [(await services.repository.read(system, "Slot", i)).resource["status"] for i in (free, busy)]
            return counts, answers, statuses
        finally:
            await services.close()

    counts, answers, statuses = asyncio.run(run())
    # Free already: no transaction. Busy: freed in one. Busy no more: none again.
    assert counts == [0, 1, 0], counts
    assert answers == [False, True, False]
    assert statuses == ["free", "free"]


def slot(status: str) -> Doc:
    return {"resourceType": "Slot", "schedule": {"reference": "Schedule/s"}, "status": status,
            "start": "2031-03-03T09:00:00Z", "end": "2031-03-03T09:15:00Z"}
