"""Rest-hook delivery: order, retries, isolation, error status, payloads, heartbeats, replay."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import (
    FAST,
    check_r4,
    create,
    create_active,
    fast_settings,
    focus_ids,
    r4_subscription,
    topic_subscription,
    unique,
    update,
    wait_until,
)
from tests.subscriptions.receiver import Received, Receiver

Doc = dict[str, Any]


def numbers(received: list[Received]) -> list[int]:
    return [n for r in received if r.body and r.status_type == "event-notification" for n in r.event_numbers]


def status_of(api: httpx.Client, sub_id: str) -> dict[str, Any]:
    bundle = api.get(f"/Subscription/{sub_id}/$status").json()
    params = bundle["entry"][0]["resource"]["parameter"]
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None) for p in params}


def test_failing_receiver_gets_every_event_in_order(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    create_active(api, topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",)))
    receiver.fail_next = 5
    ids = [create(api, task(u))["id"] for _ in range(10)]
    received = receiver.wait_for(lambda rs: len(numbers(rs)) >= 10)
    assert receiver.fail_next == 0  # it did fail five times
    assert numbers(received) == list(range(1, 11))  # every event, in order, no gap
    assert [i for r in received if r.status_type == "event-notification" for i in focus_ids(r.json)] == ids


def test_dead_endpoint_does_not_slow_others(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    with socket.socket() as blackhole:  # accepts connections, never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        dead = f"http://127.0.0.1:{blackhole.getsockname()[1]}/hook"
        topic = topic_subscription("task-status", dead, filters=(f"Task?owner=Practitioner/{u}",))
        assert api.post("/Subscription", json=topic).status_code == 201  # its handshake hangs
        create_active(api, topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",)))
        delays = []
        for i in range(5):
            t0 = time.perf_counter()
            create(api, task(u))
            received = receiver.wait_for(lambda rs, n=i + 1: len(numbers(rs)) >= n)
            delays.append(received[-1].at - t0)
        assert max(delays) < 1.5, delays  # the dead one times out after 2 s, again and again


@pytest.fixture(scope="module")
def short_window(mongodb_uri: str) -> Iterator[httpx.Client]:
    settings = fast_settings(mongodb_uri, "fhir_subscriptions_window",
                             subscriptions=dataclasses.replace(FAST, retry_window=1.0))
    with RunningServer(settings), httpx.Client(base_url=settings.base_url, timeout=30) as client:
        yield client


def test_error_after_retry_window_then_reactivation_delivers_backlog(short_window: httpx.Client,
                                                                      receiver: Receiver) -> None:
    api = short_window
    u = unique()
    sub_id = create_active(api, topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",)))
    receiver.stop()
    first = [create(api, task(u))["id"] for _ in range(3)]
    wait_until(lambda: api.get(f"/Subscription/{sub_id}").json()["status"] == "error", what="error status")
    sub = api.get(f"/Subscription/{sub_id}").json()
    assert "delivery failed" in sub["error"]
    status = status_of(api, sub_id)
    assert status["status"] == "error" and "delivery failed" in status["error"]["text"]
    later = [create(api, task(u))["id"] for _ in range(2)]  # still collected while in error
    receiver.start()
    assert update(api, {**sub, "status": "requested"})["status"] == "requested"
    received = receiver.wait_for(lambda rs: len(numbers(rs)) >= 5)
    assert numbers(received) == [1, 2, 3, 4, 5]
    assert [i for r in received if r.status_type == "event-notification" for i in focus_ids(r.json)] == first + later
    wait_until(lambda: api.get(f"/Subscription/{sub_id}").json()["status"] == "active")
    assert "error" not in api.get(f"/Subscription/{sub_id}").json()
    api.delete(f"/Subscription/{sub_id}")


def test_headers_content_type_and_handshake(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    sub = topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",),
                             headers=("Authorization: Bearer hook-secret", "X-Tenant: clinic-7"))
    sub_id = create_active(api, sub)
    [handshake] = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert handshake.status_type == "handshake"
    check_r4(handshake.json)
    create(api, task(u))
    event = receiver.wait_for(lambda rs: len(numbers(rs)) >= 1)[-1]
    for r in (handshake, event):
        assert r.headers["authorization"] == "Bearer hook-secret"
        assert r.headers["x-tenant"] == "clinic-7"
        assert r.headers["content-type"] == "application/fhir+json"
    assert event.json["type"] == "history"
    status = event.json["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    assert {"name": "subscription", "valueReference": {"reference": f"{str(api.base_url).rstrip('/')}/Subscription/{sub_id}"}} in status["parameter"]


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_payload_content(api: httpx.Client, receiver: Receiver, content: str) -> None:
    u = unique()
    create_active(api, topic_subscription("task-status", receiver.url, content=content,
                                          filters=(f"Task?owner=Practitioner/{u}",)))
    t = create(api, task(u))
    event = receiver.wait_for(lambda rs: len(numbers(rs)) >= 1)[-1]
    check_r4(event.json)
    parts = next(p for p in event.json["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event")["part"]
    focus = [p for p in parts if p["name"] == "focus"]
    if content == "empty":
        assert len(event.json["entry"]) == 1 and not focus
    else:
        assert focus[0]["valueReference"]["reference"].endswith(f"/Task/{t['id']}")
        entry = event.json["entry"][1]
        assert entry["fullUrl"].endswith(f"/Task/{t['id']}")
        assert ("resource" in entry) == (content == "full-resource")


def test_r4_without_payload_posts_no_body(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    create_active(api, r4_subscription(f"Task?owner=Practitioner/{u}", receiver.url, payload=None))
    create(api, task(u))
    create(api, task(u))
    received = receiver.wait_for(lambda rs: len(rs) >= 3)  # handshake + 2
    assert [r.body for r in received] == [b"", b"", b""]
    assert all("content-type" not in r.headers for r in received)


def test_heartbeat(api: httpx.Client, receiver: Receiver) -> None:
    create_active(api, topic_subscription("task-status", receiver.url, heartbeat=1,
                                          filters=(f"Task?owner=Practitioner/{unique()}",)))
    received = receiver.wait_for(lambda rs: sum(r.status_type == "heartbeat" for r in rs) >= 2, timeout=10)
    beat = next(r for r in received if r.status_type == "heartbeat")
    check_r4(beat.json)
    assert len(beat.json["entry"]) == 1


def test_status_and_events_replay(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    sub_id = create_active(api, topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",)))
    ids = [create(api, task(u))["id"] for _ in range(5)]
    receiver.wait_for(lambda rs: len(numbers(rs)) >= 5)
    status = status_of(api, sub_id)
    assert status["type"] == "query-status" and status["status"] == "active"
    assert status["events-since-subscription-start"] == "5"
    replay = api.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": 2, "eventsUntilNumber": 4}).json()
    check_r4(replay)
    assert replay["type"] == "history"
    params = replay["entry"][0]["resource"]["parameter"]
    assert {"name": "type", "valueCode": "query-event"} in params
    assert [int(part["valueString"]) for p in params if p["name"] == "notification-event"
            for part in p["part"] if part["name"] == "event-number"] == [2, 3, 4]
    assert focus_ids(replay) == ids[1:4]
    assert all("resource" in e for e in replay["entry"][1:])
    ids_only = api.post(f"/Subscription/{sub_id}/$events", json={"resourceType": "Parameters", "parameter": [
        {"name": "eventsSinceNumber", "valueString": "5"}, {"name": "content", "valueCode": "id-only"}]}).json()
    assert focus_ids(ids_only) == ids[4:] and "resource" not in ids_only["entry"][1]
    everything = api.get(f"/Subscription/{sub_id}/$events").json()
    assert focus_ids(everything) == ids
    assert api.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "x"}).status_code == 400
    assert api.get("/Subscription/nope/$status").status_code == 404


def test_status_lifecycle_is_the_servers(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    sub = topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",))
    created = api.post("/Subscription", json={**sub, "status": "active", "error": "made up"}).json()
    assert created["status"] == "requested" and "error" not in created
    wait_until(lambda: api.get(f"/Subscription/{created['id']}").json()["status"] == "active")
    sub = api.get(f"/Subscription/{created['id']}").json()
    create(api, task(u))
    receiver.wait_for(lambda rs: len(numbers(rs)) >= 1)
    off = update(api, {**sub, "status": "off"})
    assert off["status"] == "off"
    create(api, task(u))  # not collected while off
    back = update(api, {**off, "status": "active"})
    assert back["status"] == "requested"  # a new handshake first
    wait_until(lambda: api.get(f"/Subscription/{created['id']}").json()["status"] == "active")
    last = create(api, task(u))
    received = receiver.wait_for(lambda rs: len(numbers(rs)) >= 2)
    assert numbers(received) == [1, 2]
    assert focus_ids(received[-1].json) == [last["id"]]
    assert [r.status_type for r in received].count("handshake") == 2
