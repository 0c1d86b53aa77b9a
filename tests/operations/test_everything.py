"""Patient/$everything: the compartment, referenced directory resources, paging, filters."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.security.conftest import Mint


def _seed(client: httpx.Client) -> dict[str, str]:
    def put(resource: dict) -> None:
        r = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code == 201, r.text

    put({"resourceType": "Patient", "id": "p1"})
    put({"resourceType": "Patient", "id": "p2"})
    put({"resourceType": "Practitioner", "id": "dr1"})
    put({"resourceType": "Practitioner", "id": "dr2"})
    put({"resourceType": "Organization", "id": "org1", "name": "Cardiology"})
    p1 = {"reference": "Patient/p1"}
    put({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order", "for": p1,
         "owner": {"reference": "Practitioner/dr1"}})
    put({"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order",
         "for": {"reference": "Patient/p2"}, "owner": {"reference": "Practitioner/dr2"}})
    put({"resourceType": "Appointment", "id": "a1", "status": "booked", "participant": [
        {"actor": p1, "status": "accepted"}, {"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"}]})
    put({"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan", "subject": p1})
    put({"resourceType": "CareTeam", "id": "ct1", "subject": p1,
         "participant": [{"member": {"reference": "Practitioner/dr2"}}]})
    put({"resourceType": "Communication", "id": "c1", "status": "completed", "subject": p1,
         "sender": {"reference": "Organization/org1"}})
    put({"resourceType": "DocumentReference", "id": "d1", "status": "current", "subject": p1,
         "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]})
    return {}


def _modes(bundle: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"match": set(), "include": set()}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        out[entry["search"]["mode"]].add(f"{resource['resourceType']}/{resource['id']}")
    return out


P1_COMPARTMENT = {"Patient/p1", "Task/t1", "Appointment/a1", "CarePlan/cp1", "CareTeam/ct1",
                  "Communication/c1", "DocumentReference/d1"}


def test_everything_returns_compartment_and_directory(client: httpx.Client) -> None:
    _seed(client)
    r = client.get("/Patient/p1/$everything")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    modes = _modes(bundle)
    assert modes["match"] == P1_COMPARTMENT
    assert modes["include"] == {"Practitioner/dr1", "Practitioner/dr2", "Organization/org1"}


def test_everything_paging_and_filters(client: httpx.Client) -> None:
    _seed(client)
    seen: list[str] = []
    page = client.get("/Patient/p1/$everything", params={"_count": 2}).json()
    while True:
        seen.extend(sorted(_modes(page)["match"]))
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = client.get(nxt[0]).json()
    assert len(seen) == len(set(seen)) and set(seen) == P1_COMPARTMENT
    only_tasks = client.get("/Patient/p1/$everything", params={"_type": "Task,Appointment"}).json()
    assert _modes(only_tasks)["match"] == {"Task/t1", "Appointment/a1"}
    time.sleep(0.01)
    mark = client.get("/DocumentReference/d1").json()["meta"]["lastUpdated"]  # the last one seeded
    time.sleep(0.01)
    client.put("/CarePlan/cp1", json={"resourceType": "CarePlan", "id": "cp1", "status": "completed",
                                      "intent": "plan", "subject": {"reference": "Patient/p1"}})
    since = client.get("/Patient/p1/$everything", params={"_since": mark}).json()
    assert "CarePlan/cp1" in _modes(since)["match"] and "Appointment/a1" not in _modes(since)["match"]
    assert client.get("/Patient/p1/$everything", params={"_type": "DiagnosticReport"}).status_code == 400
    assert client.get("/Patient/p1/$everything", params={"_since": "soon"}).status_code == 400


def test_everything_unknown_and_deleted_patient(client: httpx.Client) -> None:
    _seed(client)
    assert client.get("/Patient/nobody/$everything").status_code == 404
    client.delete("/Patient/p2")
    assert client.get("/Patient/p2/$everything").status_code == 410


def test_capability_lists_everything_on_patient_only(client: httpx.Client) -> None:
    resources = {r["type"]: r for r in client.get("/metadata").json()["rest"][0]["resource"]}
    assert {o["name"] for o in resources["Patient"]["operation"]} == {"validate", "everything"}
    assert {o["name"] for o in resources["Task"]["operation"]} == {"validate"}


@pytest.mark.parametrize("who", ["p1", "p2"])
def test_everything_respects_patient_scopes(secure: Callable[..., httpx.Client], mint: Mint, who: str) -> None:
    _seed(secure(mint("system/*.cruds")))
    app = secure(mint("patient/*.rs", patient=who))
    r = app.get("/Patient/p1/$everything")
    if who == "p1":
        assert r.status_code == 200
        assert _modes(r.json())["match"] == P1_COMPARTMENT
    else:
        assert r.status_code == 404


def test_compartment_reads(client: httpx.Client) -> None:
    _seed(client)
    everything = client.get("/Patient/p1/*")
    assert everything.status_code == 200, everything.text
    assert _modes(everything.json())["match"] == P1_COMPARTMENT
    tasks = client.get("/Patient/p1/Task").json()
    assert _modes(tasks)["match"] == {"Task/t1"}
    narrowed = client.get("/Patient/p1/*", params={"_id": "t1,cp1,t2"}).json()
    assert _modes(narrowed)["match"] == {"Task/t1", "CarePlan/cp1"}
    assert client.get("/Patient/p1/*", params={"status": "active"}).status_code == 400
    assert client.get("/Patient/p1/Practitioner").status_code == 400  # not a compartment type
