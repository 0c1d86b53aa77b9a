"""No path leaks a denied resource: read, vread, search (and its total), _include,
_revinclude, chains, _has, compartment search, history, $everything, batch and transaction
GETs. Paul (pharmacist) is denied everything of Anna's; Clara only her messages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.consent.conftest import World, actor, classes, consent, ids


@pytest.fixture
def denied(world: World) -> World:
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    world.consent(consent({"type": "deny", "actor": [actor("RelatedPerson/clara")],
                           "class": classes("Communication")}))
    return world


def _all_ids(bundle: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] != "OperationOutcome"}


def _annas(found: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(t, i) for t, i in found if i.startswith("anna") or (t, i) == ("Consent", "*")}


def test_read_and_vread_are_refused(denied: World) -> None:
    assert denied.paul.get("/Task/anna-task").status_code == 403
    assert denied.paul.get("/Task/anna-task/_history/1").status_code == 403
    assert denied.gray.get("/Task/anna-task/_history/1").status_code == 200


def test_search_and_totals(denied: World) -> None:
    for path in ("/Task", "/Appointment", "/CarePlan", "/Communication", "/Patient", "/Consent",
                 "/RelatedPerson", "/CareTeam"):
        bundle = denied.paul.get(path, params={"_total": "accurate"}).json()
        assert not _annas(_all_ids(bundle)), path
        assert bundle.get("total", 0) == len(bundle.get("entry", [])), path
    assert ids(denied.paul.post("/Task/_search", data={"_id": "anna-task"}).json()) == set()
    assert ids(denied.paul.get("/", params={"_type": "Task,Appointment"}).json()) == {"bob-task"}
    # Compartment search names Anna outright and still finds nothing.
    assert ids(denied.paul.get("/Patient/anna/Task").json()) == set()
    assert ids(denied.gray.get("/Patient/anna/Task").json()) == {"anna-task"}


def test_include_and_revinclude(denied: World) -> None:
    included = denied.paul.get("/Task", params={"_include": "Task:patient"}).json()
    assert _all_ids(included) == {("Task", "bob-task"), ("Patient", "bob")}
    revincluded = denied.paul.get("/Practitioner", params={"_id": "gray", "_revinclude": "Task:requester"}).json()
    assert _all_ids(revincluded) == {("Practitioner", "gray"), ("Task", "bob-task")}
    # Clara: Anna's Patient resource with what it gathers, except the message.
    gathered = denied.clara.get("/Patient", params={"_id": "anna", "_revinclude": "Communication:subject"}).json()
    assert _all_ids(gathered) == {("Patient", "anna")}
    assert ("Communication", "anna-message") in _all_ids(denied.gray.get(
        "/Patient", params={"_id": "anna", "_revinclude": "Communication:subject"}).json())


def test_chains_and_has(denied: World) -> None:
    assert ids(denied.paul.get("/Task", params={"patient.family": "Adams"}).json()) == set()
    assert ids(denied.gray.get("/Task", params={"patient.family": "Adams"}).json()) == {"anna-task"}
    # Clara may not learn which patient has a message through _has either.
    assert ids(denied.clara.get("/Patient", params={"_has:Communication:subject:status": "completed"}).json()) == set()
    assert ids(denied.gray.get("/Patient", params={"_has:Communication:subject:status": "completed"}).json()) == {"anna"}


def test_history(denied: World) -> None:
    assert denied.paul.get("/Task/anna-task/_history").json().get("entry") is None
    assert {i for t, i in _all_ids(denied.paul.get("/Task/_history").json())} == {"bob-task"}
    assert not _annas(_all_ids(denied.paul.get("/_history").json()))
    assert ("Communication", "anna-message") not in _all_ids(denied.clara.get("/_history").json())


def test_everything(denied: World) -> None:
    assert denied.paul.get("/Patient/anna/$everything").status_code == 404
    everything = _all_ids(denied.clara.get("/Patient/anna/$everything").json())
    assert ("Appointment", "anna-visit") in everything
    assert ("Communication", "anna-message") not in everything
    assert ("Communication", "anna-message") in _all_ids(denied.gray.get("/Patient/anna/$everything").json())


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_batch_and_transaction_gets(denied: World, kind: str) -> None:
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [
        {"request": {"method": "GET", "url": "Task/anna-task"}},
        {"request": {"method": "GET", "url": "Task?_id=anna-task,bob-task"}},
    ]}
    reply = denied.paul.post("/", json=bundle)
    assert reply.status_code == 200, reply.text
    read, search = reply.json()["entry"]
    assert read["response"]["status"].startswith("403")
    assert "resource" not in read
    assert ids(search["resource"]) == {"bob-task"}
