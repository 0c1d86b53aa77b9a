"""No event is lost: the outbox is written atomically with each change, a server killed with
SIGKILL between commit and delivery delivers everything after a restart, and a second process
takes over the work of one that died."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import RunningServer, free_port
from tests.processes import LEASE_TTL, ServerProcess
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import FAST, create, fast_settings, topic_subscription, unique, wait_until
from tests.subscriptions.receiver import Received, Receiver

Doc = dict[str, Any]


def numbers(received: list[Received]) -> list[int]:
    return [n for r in received if r.body and r.status_type == "event-notification" for n in r.event_numbers]


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


def test_sigkill_between_commit_and_delivery(mongodb_uri: str, processes: list[ServerProcess]) -> None:
    database, port = unique("fhir_kill_"), free_port()
    receiver = Receiver()  # down: nothing can be delivered
    first = ServerProcess(mongodb_uri, database, port)
    processes.append(first)
    api = httpx.Client(base_url=first.base_url, timeout=30)
    u = unique()
    sub = api.post("/Subscription", json=topic_subscription("task-status", receiver.url,
                                                            filters=(f"Task?owner=Practitioner/{u}",)))
    assert sub.status_code == 201
    ids = [create(api, task(u))["id"] for _ in range(20)]  # committed...
    first.kill()  # ...and the process gone before any delivery
    api.close()
    second = ServerProcess(mongodb_uri, database, port)
    processes.append(second)
    receiver.start()
    try:
        received = receiver.wait_for(lambda rs: len(set(numbers(rs))) >= 20, timeout=30)
        got = numbers(received)
        assert sorted(set(got)) == list(range(1, 21))  # every event, no gap
        assert got == sorted(got)  # in order (a repeat would be allowed, a reordering not)
        delivered = [e["fullUrl"].rsplit("/", 1)[-1] for r in received if r.status_type == "event-notification"
                     for e in r.json["entry"][1:]]
        assert list(dict.fromkeys(delivered)) == ids
        assert received[0].status_type == "handshake"
    finally:
        receiver.stop()


def test_another_process_takes_over(mongodb_uri: str, processes: list[ServerProcess], receiver: Receiver) -> None:
    database, port = unique("fhir_takeover_"), free_port()
    first = ServerProcess(mongodb_uri, database, port)
    processes.append(first)
    api = httpx.Client(base_url=first.base_url, timeout=30)
    u = unique()
    sub_id = api.post("/Subscription", json=topic_subscription(
        "task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",))).json()["id"]
    wait_until(lambda: api.get(f"/Subscription/{sub_id}").json()["status"] == "active")
    create(api, task(u))
    receiver.wait_for(lambda rs: len(numbers(rs)) >= 1)
    api.close()
    settings = fast_settings(mongodb_uri, database, subscriptions=dataclasses.replace(FAST, lease_ttl=LEASE_TTL))
    with RunningServer(settings), httpx.Client(base_url=settings.base_url, timeout=30) as other:
        first.kill()
        killed = time.perf_counter()
        ids = [create(other, task(u))["id"] for _ in range(5)]
        received = receiver.wait_for(lambda rs: len(numbers(rs)) >= 6, timeout=20)
        taken_over = received[-1].at - killed
        assert numbers(received) == [1, 2, 3, 4, 5, 6]
        assert [e["fullUrl"].rsplit("/", 1)[-1] for r in received[-5:] if r.status_type == "event-notification"
                for e in r.json["entry"][1:]][-5:] == ids
        assert taken_over < LEASE_TTL + 5, taken_over  # "within seconds"
        other.delete(f"/Subscription/{sub_id}")


def test_outbox_holds_one_event_per_committed_change(api: httpx.Client, mongo: MongoClient[Doc],
                                                     subs_server: RunningServer) -> None:
    outbox = mongo[subs_server.settings.database]["outbox"]
    start = datetime.now(UTC)
    u = unique()
    t = create(api, task(u))

    def events(rid: str) -> list[tuple[int, str]]:
        return [(d["v"], d["i"]) for d in outbox.find({"t": "Task", "r": rid}).sort("v", 1)]

    assert api.put(f"/Task/{t['id']}", json=t).status_code == 200  # no change: no version, no event
    assert api.put(f"/Task/{t['id']}", json={**t, "status": "accepted"}).status_code == 200
    assert api.put(f"/Task/{t['id']}", json={**t, "status": "ready"}, headers={"If-Match": 'W/"1"'}).status_code == 412
    assert api.patch(f"/Task/{t['id']}", content=b'[{"op": "replace", "path": "/status", "value": "in-progress"}]',
                     headers={"Content-Type": "application/json-patch+json"}).status_code == 200
    assert api.post("/Task", json={**task(u), "status": "not-a-status"}).status_code == 422
    assert api.delete(f"/Task/{t['id']}").status_code == 200
    assert events(t["id"]) == [(1, "create"), (2, "update"), (3, "patch"), (4, "delete")]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": task(u), "request": {"method": "POST", "url": "Task"}},
        {"resource": {**task(u), "status": "not-a-status"}, "request": {"method": "POST", "url": "Task"}}]}
    assert api.post("", json=bundle).status_code >= 400  # one bad entry: nothing is written
    ok = api.post("", json={**bundle, "entry": bundle["entry"][:1] * 2})
    assert ok.status_code == 200
    created = [e["response"]["location"].split("/")[1] for e in ok.json()["entry"]]
    tasks_since = outbox.count_documents({"t": "Task", "ts": {"$gte": start}})
    assert tasks_since == 4 + 2  # the four above, the two of the good transaction
    assert all(events(rid) == [(1, "create")] for rid in created)


def test_work_spreads_over_processes(mongodb_uri: str, mongo: MongoClient[Doc], receiver: Receiver) -> None:
    database = unique("fhir_spread_")
    a, b = fast_settings(mongodb_uri, database), fast_settings(mongodb_uri, database)
    with RunningServer(a), RunningServer(b), httpx.Client(base_url=a.base_url, timeout=30) as api:
        u = unique()
        subs = [api.post("/Subscription", json=topic_subscription(
            "task-status", f"{receiver.url}/{i}", filters=(f"Task?owner=Practitioner/{u}",))).json()["id"]
            for i in range(4)]
        leases = mongo[database]["subscription_leases"]

        def holders() -> set[str]:
            return {d["holder"] for d in leases.find({"_id": {"$in": [f"sub:{s}" for s in subs]},
                                                      "until": {"$gt": datetime.now(UTC)}})}

        wait_until(lambda: len(holders()) == 2, what="leases held by both processes")
        wait_until(lambda: all(api.get(f"/Subscription/{s}").json()["status"] == "active" for s in subs))
        t0 = time.perf_counter()
        create(api, task(u))
        # One process matches; the other's workers hear of it through the notification feed,
        # well before their fallback poll (3 s with these settings).
        received = receiver.wait_for(lambda rs: {r.path for r in rs if r.status_type == "event-notification"}
                                     == {f"/hook/{i}" for i in range(4)}, timeout=10)
        assert max(r.at for r in received) - t0 < 2.0
        for s in subs:
            api.delete(f"/Subscription/{s}")
