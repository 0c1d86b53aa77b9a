"""When the database itself fails a command (its InternalError, code 1), the client gets a 503
and nothing half-written, not a 500; a transaction the database failed is run again.

Seen in a full suite on SecantusDB under load: a transaction bundle's commitTransaction
answered InternalError, and the server passed it on as a 500. The faults here are the
database's own `failCommand` fail point (its test-only commands on), not a mock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.embedded_db import EmbeddedDatabase
from tests.conftest import RunningServer, make_settings

DATABASE = "fhir_faults"


@pytest.fixture(scope="module")
def faulty_uri() -> Iterator[str]:
    with EmbeddedDatabase(None, extra_args=("--enable-test-commands",)) as db:
        yield db.uri


@pytest.fixture(scope="module")
def mongo_faults(faulty_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    with MongoClient(faulty_uri) as client:
        yield client


@pytest.fixture(scope="module")
def http(faulty_uri: str) -> Iterator[httpx.Client]:
    with RunningServer(make_settings(faulty_uri, database=DATABASE)) as running, \
            httpx.Client(base_url=running.settings.base_url, timeout=30) as client:
        yield client


def fail(mongo: MongoClient[dict[str, Any]], commands: list[str], mode: Any) -> None:
    mongo.admin.command({"configureFailPoint": "failCommand", "mode": mode,
                         "data": {"failCommands": commands, "errorCode": 1}})


@pytest.fixture(autouse=True)
def no_fault_left(mongo_faults: MongoClient[dict[str, Any]]) -> Iterator[None]:
    yield
    mongo_faults.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def stored(mongo: MongoClient[dict[str, Any]], family: str) -> int:
    """Patients of that family name in the database, in every version kept (current + history)."""
    def count(collection: str) -> int:
        return sum(json.loads(doc["res"])["name"][0]["family"] == family
                   for doc in mongo[DATABASE][collection].find({"res": {"$ne": None}}, {"res": 1}))
    current, history = count("Patient"), count("Patient_history")
    assert current == history, (current, history)
    return current


def test_a_transaction_the_database_failed_at_commit_is_run_again(
        http: httpx.Client, mongo_faults: MongoClient[dict[str, Any]]) -> None:
    fail(mongo_faults, ["commitTransaction"], {"times": 2})
    created = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Twice"}]})
    assert created.status_code == 201, created.text
    assert stored(mongo_faults, "Twice") == 1
    assert http.get(created.headers["Location"].split("/fhir", 1)[1].rsplit("/_history", 1)[0]).status_code == 200


def test_a_database_that_keeps_failing_commits_is_answered_503_and_nothing_is_written(
        http: httpx.Client, mongo_faults: MongoClient[dict[str, Any]]) -> None:
    fail(mongo_faults, ["commitTransaction"], "alwaysOn")
    refused = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Never"}]})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Never"}]},
         "request": {"method": "POST", "url": "Patient"}} for _ in range(3)]}
    refused_bundle = http.post("/", json=bundle)
    fail(mongo_faults, ["commitTransaction"], "off")
    for answer in (refused, refused_bundle):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "transient"
    assert stored(mongo_faults, "Never") == 0
    assert http.post("/", json=bundle).status_code == 200
    assert stored(mongo_faults, "Never") == 3


def test_a_search_the_database_failed_is_answered_503(
        http: httpx.Client, mongo_faults: MongoClient[dict[str, Any]]) -> None:
    assert http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Sought"}]}).status_code == 201
    fail(mongo_faults, ["find", "aggregate"], {"times": 1})
    answer = http.get("/Patient", params={"family": "Sought"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["issue"][0]["code"] == "transient"
    found = http.get("/Patient", params={"family": "Sought"})
    assert found.status_code == 200
    assert found.json()["total"] == 1
