"""The versions this process committed lately (storage/recent.py): a reader that knows a
version committed (its change event arrived) gets it from memory even when the event
outran the committing request's publication, and never gets an attempt that was dropped.

Seen in tests/subscriptions/test_matching_cost.py (3 runs in 4): the change stream handed the
matcher a create's event before the request resumed after its commit, and the matcher read
the version back from the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from fhir_server.storage import recent as recent_module
from fhir_server.storage.recent import RecentVersions

# Long, so that a wait ended by the publication (or the drop) is told from one that ran out.
PATIENCE = 30.0


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recent_module, "PUBLISH_PATIENCE", PATIENCE)


def version(rid: str, v: int) -> dict[str, object]:
    return {"_id": f"{rid}/{v}", "id": rid, "v": v, "ts": datetime.now(UTC), "res": b"{}"}


def test_a_version_staged_when_its_event_arrives_is_served_once_published() -> None:
    async def scenario() -> tuple[object, object, float]:
        recent, session = RecentVersions(), object()
        recent.stage(session, [("Task", version("t1", 1))])
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, recent.publish, session)
        started = loop.time()
        served = await recent.committed("Task", "t1", 1)
        return served, recent.get("Task", "t1", 1), loop.time() - started

    served, held, waited = asyncio.run(scenario())
    assert served is not None and served == held
    assert waited < PATIENCE


def test_a_dropped_attempt_is_never_served_and_ends_the_wait() -> None:
    async def scenario() -> tuple[object, float]:
        recent, session = RecentVersions(), object()
        recent.stage(session, [("Task", version("t1", 1))])
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, recent.discard, session)
        started = loop.time()
        return await recent.committed("Task", "t1", 1), loop.time() - started

    served, waited = asyncio.run(scenario())
    assert served is None
    assert waited < PATIENCE


def test_a_version_nobody_here_committed_is_not_waited_for() -> None:
    async def scenario() -> object:
        recent = RecentVersions()
        recent.stage(object(), [("Task", version("t2", 1))])  # another version in flight
        reading = recent.committed("Task", "t1", 1)
        try:
            reading.send(None)
        except StopIteration as answered:  # answered without suspending once
            return answered.value
        reading.close()
        raise AssertionError("it waited for a version nobody here is committing")

    assert asyncio.run(scenario()) is None


def test_an_attempt_run_again_and_then_dropped_leaves_nothing_staged() -> None:
    async def scenario() -> object:
        recent, session = RecentVersions(), object()
        recent.stage(session, [("Task", version("t1", 1))])
        recent.stage(session, [("Task", version("t1", 1))])  # the driver ran the transaction again
        recent.discard(session)
        reading = recent.committed("Task", "t1", 1)
        try:
            reading.send(None)
        except StopIteration as answered:
            return answered.value
        reading.close()
        raise AssertionError("a dropped attempt's version is still taken for staged")

    assert asyncio.run(scenario()) is None
