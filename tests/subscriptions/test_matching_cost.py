"""What matching and delivering a create costs the database (its own profiler): the matcher and
the notification's read take the version the write just committed from memory, and an event
matched by several Subscriptions raises their counters in one write, gap-free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.conftest import RunningServer
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import create, create_active, fast_settings, topic_subscription, unique
from tests.subscriptions.receiver import Receiver

DATABASE = "fhir_subscriptions_cost"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def server(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(fast_settings(mongodb_uri, DATABASE)) as running:
        yield running


@pytest.fixture
def api(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.settings.base_url, timeout=30) as client:
        yield client
        for entry in client.get("/Subscription", params={"_count": "1000"}).json().get("entry", []):
            client.delete(f"/Subscription/{entry['resource']['id']}")


@pytest.fixture
def db(mongo: MongoClient[Doc]) -> Iterator[Database[Doc]]:
    database = mongo[DATABASE]
    yield database
    database.command("profile", 0)


def profiled(db: Database[Doc]) -> None:
    """From now on, every command on the database is in system.profile (and only those)."""
    db.command("profile", 0)
    db.drop_collection("system.profile")
    db.command("profile", 2)


def commands(db: Database[Doc], op: str, collection: str) -> list[Doc]:
    return list(db["system.profile"].find({"op": op, "ns": f"{DATABASE}.{collection}"}))


def events(receiver: Receiver, count: int) -> list[Doc]:
    """The first `count` event notifications' bundles (handshakes left out)."""
    received = receiver.wait_for(
        lambda rs: len([r for r in rs if r.status_type == "event-notification"]) >= count)
    return [r.json for r in received if r.status_type == "event-notification"]


def status_count(api: httpx.Client, sub_id: str) -> str:
    bundle = api.get(f"/Subscription/{sub_id}/$status").json()
    params = bundle["entry"][0]["resource"]["parameter"]
    return str(next(p["valueString"] for p in params if p["name"] == "events-since-subscription-start"))


def test_a_matched_create_is_matched_and_delivered_without_reading_its_version_back(
        api: httpx.Client, db: Database[Doc]) -> None:
    u = unique()
    receiver = Receiver().start()
    try:
        create_active(api, topic_subscription("task-status", receiver.url, filters=(f"Task?owner=Practitioner/{u}",)))
        profiled(db)
        created = create(api, task(u))
        bundle = events(receiver, 1)[0]
        db.command("profile", 0)
    finally:
        receiver.stop()
    # Delivered with its content (full-resource), read as the owner...
    assert bundle["entry"][1]["resource"]["id"] == created["id"]
    assert bundle["entry"][1]["resource"]["meta"]["versionId"] == "1"
    # ... from the version the create committed, not from the database again.
    assert commands(db, "query", "Task_history") == []


def test_an_event_of_three_subscriptions_raises_their_counters_in_one_write(
        api: httpx.Client, db: Database[Doc]) -> None:
    u = unique()
    receiver = Receiver().start()
    try:
        subs = [create_active(api, topic_subscription("task-status", receiver.url,
                                                      filters=(f"Task?owner=Practitioner/{u}",)))
                for _ in range(3)]
        profiled(db)
        create(api, task(u))
        bundles = events(receiver, 3)
        db.command("profile", 0)
        create(api, task(u))
        later = events(receiver, 6)[3:]
    finally:
        receiver.stop()
    counters = commands(db, "update", "subscription_state")
    # No findAndModify per Subscription: one update of all three.
    assert list(db["system.profile"].find({"command.findAndModify": "subscription_state"})) == []
    assert [len(c["command"]["updates"]) for c in counters] == [3]
    for found in (bundles, later):
        assert sorted(_subscription(b) for b in found) == sorted(f"{api.base_url}Subscription/{s}" for s in subs)
    # Gap-free: each Subscription numbered its two events 1 and 2.
    assert sorted(_numbers(b) for b in bundles) == [["1"]] * 3
    assert sorted(_numbers(b) for b in later) == [["2"]] * 3
    assert [status_count(api, s) for s in subs] == ["2", "2", "2"]


def test_a_counter_moved_behind_the_matchers_back_is_read_again(
        api: httpx.Client, db: Database[Doc]) -> None:
    u = unique()
    receiver = Receiver().start()
    try:
        sub = create_active(api, topic_subscription("task-status", receiver.url,
                                                    filters=(f"Task?owner=Practitioner/{u}",)))
        create(api, task(u))
        assert _numbers(events(receiver, 1)[0]) == ["1"]
        # Another numbering (a predecessor's, say) moved the counter: the next event follows it.
        db["subscription_state"].update_one({"_id": sub}, {"$set": {"n": 5}})
        create(api, task(u))
        assert _numbers(events(receiver, 2)[1]) == ["6"]
    finally:
        receiver.stop()
    assert status_count(api, sub) == "6"
    assert sorted(n["n"] for n in db["subscription_notifications"].find({"s": sub})) == [1, 6]


def _status(bundle: Doc) -> list[Doc]:
    params: list[Doc] = bundle["entry"][0]["resource"]["parameter"]
    return params


def _subscription(bundle: Doc) -> str:
    return str(next(p["valueReference"]["reference"] for p in _status(bundle) if p["name"] == "subscription"))


def _numbers(bundle: Doc) -> list[str]:
    return [part["valueString"] for p in _status(bundle) if p["name"] == "notification-event"
            for part in p["part"] if part["name"] == "event-number"]
