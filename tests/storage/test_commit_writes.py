"""What a write's transaction sends the database (its own profiler), and that the versions a
process serves from memory after committing them are exactly the stored ones."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.services import auth_settings
from tests.conftest import RunningServer, make_settings

DATABASE = "fhir_commit_writes"
Doc = dict[str, Any]
TASK = {"resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/p1"}, "owner": {"reference": "Practitioner/dr1"}}


@pytest.fixture(scope="module")
def secure(mongodb_uri: str) -> Iterator[httpx.Client]:
    """Auth on (so Provenance is written with every change), as a user with a token."""
    settings = make_settings(mongodb_uri, database=DATABASE, auth_enabled=True)
    with RunningServer(settings):
        async def mint() -> str:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[DATABASE], auth_settings(settings), ["user/Task.cruds"],
                                            fhir_user="Practitioner/dr1")
            finally:
                await client.close()

        token = asyncio.run(mint())
        with httpx.Client(base_url=settings.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            yield client


def test_a_change_and_its_provenance_leave_their_events_in_one_insert(
        secure: httpx.Client, mongo: MongoClient[Doc]) -> None:
    db = mongo[DATABASE]
    db.command("profile", 0)
    db.drop_collection("system.profile")
    db.command("profile", 2)
    try:
        created = secure.post("/Task", json=TASK)
    finally:
        db.command("profile", 0)
    assert created.status_code == 201, created.text
    inserts = list(db["system.profile"].find({"op": "insert", "ns": f"{DATABASE}.outbox"}))
    assert [[(d["t"], d["r"]) for d in c["command"]["documents"]] for c in inserts] == [
        [("Task", created.json()["id"]), ("Provenance", inserts[0]["command"]["documents"][1]["r"])]]
    provenance = db["Provenance"].find_one({"_id": inserts[0]["command"]["documents"][1]["r"]})
    assert provenance is not None and provenance["sp"]["target"] == f"Task/{created.json()['id']}"


def test_every_version_read_after_racing_updates_is_the_stored_one(
        secure: httpx.Client, mongo: MongoClient[Doc]) -> None:
    """16 concurrent updates of one Task lose races and are planned again: only committed
    versions are served, from memory or not, and each is the one stored."""
    task_id = secure.post("/Task", json=TASK).json()["id"]

    def put(n: int) -> int:
        for _ in range(20):
            response = secure.put(f"/Task/{task_id}", json={**TASK, "id": task_id, "description": f"update {n}"})
            if response.status_code != 409:
                return response.status_code
        return 409

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(put, range(16)))
    assert statuses == [200] * 16
    stored = {d["v"]: d["res"] for d in mongo[DATABASE]["Task_history"].find({"id": task_id})}
    assert sorted(stored) == list(range(1, 18))
    for version, raw in stored.items():
        response = secure.get(f"/Task/{task_id}/_history/{version}")
        assert response.status_code == 200
        assert response.json() == orjson.loads(raw)
