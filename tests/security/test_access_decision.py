"""One access decision per request (fhir_server.access), through the HTTP API: a
patient-scoped write lands in the patient's own compartment and in no other patient's, on
every write path (create, update, patch, transaction entry, batch entry)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.access import NoPrincipal
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.services import build_services
from tests.conftest import RunningServer
from tests.security.conftest import Mint

PATCH = {"Content-Type": "application/json-patch+json"}


def _task(patient: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": f"Patient/{patient}"}, **extra}


# For p2, naming p1 as the requester: the old rule ("any reference to Patient/p1") let it
# through; by its computed compartments it is in p2's record, not p1's.
INTO_P2 = _task("p2", requester={"reference": "Patient/p1"})


@pytest.fixture
def people(secure: Callable[..., httpx.Client], mint: Mint) -> dict[str, httpx.Client]:
    admin = secure(mint("system/*.cruds"))
    for name in ("p1", "p2"):
        assert admin.put(f"/Patient/{name}", json={"resourceType": "Patient", "id": name}).status_code == 201
    assert admin.put("/Task/t1", json={**_task("p1"), "id": "t1"}).status_code == 201
    return {"admin": admin, "p1": secure(mint("patient/Task.cruds", patient="p1", fhir_user="Patient/p1"))}


def _stored_for(mongo: MongoClient[dict[str, Any]], server: RunningServer, patient: str) -> int:
    return mongo[server.settings.database]["Task"].count_documents({"compartments.Patient": patient})


def test_a_patient_scoped_create_into_another_patients_record_is_403(
        people: dict[str, httpx.Client], mongo: MongoClient[dict[str, Any]], secure_server: RunningServer) -> None:
    p1 = people["p1"]
    before = _stored_for(mongo, secure_server, "p2")
    reply = p1.post("/Task", json=INTO_P2)
    assert reply.status_code == 403, reply.text
    assert reply.json()["resourceType"] == "OperationOutcome"
    # A reference to p1 somewhere that does not put it in p1's compartment is not enough.
    noted = {**_task("p2"), "for": None, "note": [{"authorReference": {"reference": "Patient/p1"}, "text": "x"}]}
    del noted["for"]
    assert p1.post("/Task", json=noted).status_code == 403
    assert _stored_for(mongo, secure_server, "p2") == before
    # Her own record: accepted.
    assert p1.post("/Task", json=_task("p1")).status_code == 201


def test_a_patient_scoped_update_or_patch_into_another_patients_record_is_403(
        people: dict[str, httpx.Client]) -> None:
    p1, admin = people["p1"], people["admin"]
    assert p1.put("/Task/t1", json={**INTO_P2, "id": "t1"}).status_code == 403
    assert p1.put("/Task/new-one", json={**INTO_P2, "id": "new-one"}).status_code == 403
    move = b'[{"op":"replace","path":"/for","value":{"reference":"Patient/p2"}}]'
    assert p1.patch("/Task/t1", content=move, headers=PATCH).status_code == 403
    assert admin.get("/Task/t1").json()["for"] == {"reference": "Patient/p1"}
    assert admin.get("/Task/new-one").status_code == 404
    # Within her own record: accepted.
    keep = b'[{"op":"replace","path":"/status","value":"cancelled"}]'
    assert p1.patch("/Task/t1", content=keep, headers=PATCH).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_patient_scoped_transaction_entry_into_another_patients_record_is_403(
        people: dict[str, httpx.Client], method: str) -> None:
    entry: dict[str, Any] = {"resource": {**INTO_P2, **({"id": "tx"} if method == "PUT" else {})},
                             "request": {"method": method, "url": "Task/tx" if method == "PUT" else "Task"}}
    mine = {"resource": _task("p1"), "request": {"method": "POST", "url": "Task"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [mine, entry]}
    reply = people["p1"].post("", json=bundle)
    assert reply.status_code == 403, reply.text
    found = people["admin"].get("/Task", params={"patient": "p2"}).json()
    assert found.get("total", len(found.get("entry", []))) == 0


def test_a_patient_scoped_batch_entry_into_another_patients_record_is_403(people: dict[str, httpx.Client]) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _task("p1"), "request": {"method": "POST", "url": "Task"}},
        {"resource": INTO_P2, "request": {"method": "POST", "url": "Task"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": base64.b64encode(b'[{"op":"replace","path":"/for","value":'
                                               b'{"reference":"Patient/p2"}}]').decode()},
         "request": {"method": "PATCH", "url": "Task/t1"}},
    ]}
    reply = people["p1"].post("", json=bundle)
    assert reply.status_code == 200, reply.text
    statuses = [e["response"]["status"] for e in reply.json()["entry"]]
    assert statuses[0].startswith("201")
    assert statuses[1].startswith("403")
    assert statuses[2].startswith("403")
    assert people["admin"].get("/Task", params={"patient": "p2"}).json().get("entry") is None


def test_with_auth_on_the_repository_refuses_a_context_without_a_principal(secure_settings: Settings) -> None:
    """A bug that drops the principal must not open the server: every read and write path of
    the repository refuses the context (401), none treats it as unrestricted."""

    async def scenario() -> None:
        services = await build_services(secure_settings)
        try:
            system = RequestContext.system(secure_settings.base_url)
            await services.repository.update(system, "Patient", "p9", {"resourceType": "Patient", "id": "p9"})
            bare = RequestContext(base_url=secure_settings.base_url, interaction="read", resource_type="Patient")
            with pytest.raises(NoPrincipal) as info:
                await services.repository.read(bare, "Patient", "p9")
            assert info.value.status == 401
            bare.interaction = "create"
            with pytest.raises(NoPrincipal):
                await services.repository.create(bare, {"resourceType": "Patient"})
            bare.interaction = "delete"
            with pytest.raises(NoPrincipal):
                await services.repository.delete(bare, "Patient", "p9")
            # The server's own work is SYSTEM, explicitly: it reads what it wrote.
            assert (await services.repository.read(system, "Patient", "p9")).id == "p9"
        finally:
            await services.close()

    asyncio.run(scenario())
