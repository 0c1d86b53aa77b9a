"""AuditEvents per IHE BALP for reads, searches, writes, Consent decisions and token
issuance; who may read them; and that they cannot be changed."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.auth.clients import ClientRegistry
from fhir_server.config import DEFAULT_PROFILES_DIR, Settings
from fhir_server.search import SearchEngine
from fhir_server.validation import Validator
from tests.audit.conftest import audit_events, jti
from tests.conftest import Mint, RunningServer
from tests.consent.conftest import World, actor, consent, eventually, ref

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _entities(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["what"]["reference"]: e for e in event.get("entity", []) if "reference" in e.get("what", {})}


def _agent(event: dict[str, Any], code: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in event["agent"] if a["type"]["coding"][0]["code"] == code)
    return found


def test_a_read_is_recorded_after_balp(world: World, tokens: dict[str, str]) -> None:
    assert world.gray.get("/Task/anna-task").status_code == 200
    [event] = audit_events(world, agent="Practitioner/gray", subtype="read")
    assert event["type"]["code"] == "rest" and event["action"] == "R" and event["outcome"] == "0"
    user = _agent(event, "UserOauthAgent")
    assert user["who"] == {"reference": "Practitioner/gray"} and user["requestor"] is True
    assert user["policy"] == [jti(tokens["gray"])]
    assert _agent(event, "110153")["network"]["address"] == "127.0.0.1"
    assert _agent(event, "110152")["who"]["display"] == str(world.admin.base_url).rstrip("/")
    entities = _entities(event)
    assert entities["Task/anna-task/_history/1"]["role"]["code"] == "4"
    assert entities["Patient/anna"]["role"]["code"] == "1"
    assert event["source"]["type"][0]["code"] == "4"
    assert Validator(DEFAULT_PROFILES_DIR).validate(event).valid


def test_a_search_records_its_query_and_every_patient(world: World) -> None:
    assert world.gray.get("/Task", params={"status": "requested"}).status_code == 200
    [event] = audit_events(world, agent="Practitioner/gray", subtype="search-type")
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == "status=requested"
    assert {"Patient/anna", "Patient/bob"} <= set(_entities(event))


def test_who_saw_this_patients_data_last_week(world: World, secure_server: RunningServer,
                                              mongo: MongoClient[dict[str, Any]]) -> None:
    world.gray.get("/CarePlan/anna-plan")
    world.paul.get("/Appointment", params={"patient": "anna"})
    world.chen.get("/Patient/bob")
    week_ago = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d")

    def readers() -> set[str]:
        events = audit_events(world, patient="anna", date=f"ge{week_ago}", type="rest")
        return {a["who"].get("reference") for e in events for a in e["agent"] if a["requestor"]}

    assert eventually(lambda: {"Practitioner/gray", "Practitioner/paul"} <= readers())
    assert "Practitioner/chen" not in readers()
    # The question is answered from an index.
    settings: Settings = secure_server.settings
    search = SearchEngine(settings).parse("AuditEvent", [("patient", "Patient/anna"), ("date", f"ge{week_ago}")])
    plan = mongo[settings.database]["AuditEvent"].find(search.filter).explain()["queryPlanner"]["winningPlan"]
    assert "IXSCAN" in str(plan) and "audit_patient_date" in str(plan)


def test_writes_are_recorded_with_their_provenance(world: World) -> None:
    created = world.gray.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                              "for": ref("Patient/anna")}).json()
    tid = created["id"]
    # Written in the write's own transaction: there at once, no batch to wait for.
    events = world.auditor.get("/AuditEvent", params={"entity": f"Task/{tid}"}).json()["entry"]
    assert [e["resource"]["subtype"][0]["code"] for e in events] == ["create"]
    [provenance] = [e["resource"] for e in world.auditor.get("/Provenance", params={"target": f"Task/{tid}"}).json()["entry"]]
    assert provenance["target"] == [ref(f"Task/{tid}/_history/1")]
    assert provenance["recorded"] == created["meta"]["lastUpdated"]
    assert provenance["agent"][0]["who"] == ref("Practitioner/gray")
    assert provenance["location"] == ref("Location/gp-practice")
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"
    assert Validator(DEFAULT_PROFILES_DIR).validate(provenance).valid
    assert world.gray.put(f"/Task/{tid}", json={**created, "status": "cancelled"}).status_code == 200
    assert world.admin.delete(f"/Task/{tid}").status_code == 200
    provenances = world.auditor.get("/Provenance", params={"target": f"Task/{tid}"}).json()["entry"]
    assert sorted(p["resource"]["target"][0]["reference"] for p in provenances) == [
        f"Task/{tid}/_history/{v}" for v in (1, 2, 3)]


def test_a_refused_write_leaves_a_failure_event_and_no_provenance(world: World) -> None:
    # A write is refused by a provision naming `collect` (docs/consent.md).
    collect = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "collect"}]}
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/chen")], "action": [collect]}))
    task = {"resourceType": "Task", "id": "chens-task", "status": "requested", "intent": "order",
            "for": ref("Patient/anna")}
    assert world.chen.put("/Task/chens-task", json=task).status_code == 403
    [event] = audit_events(world, agent="Practitioner/chen", subtype="update")
    assert event["outcome"] == "4"
    assert world.auditor.get("/Provenance", params={"target": "Task/chens-task"}).json().get("entry") is None


def test_consent_decisions_are_recorded(world: World) -> None:
    cid = world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    assert world.paul.get("/Task/anna-task").status_code == 403
    assert world.paul.get("/Task/anna-task", headers={"X-Purpose-Of-Use": "BTG"}).status_code == 200
    assert world.gray.get("/Task/anna-task").status_code == 200
    def decided() -> list[dict[str, Any]]:
        events = audit_events(world, entity=f"Consent/{cid}")
        return [e for e in events if "detail" in _entities(e).get(f"Consent/{cid}", {})]

    eventually(lambda: len(decided()) >= 3)
    by_agent: dict[tuple[str, str], dict[str, Any]] = {}
    for event in decided():
        who = next(a["who"]["reference"] for a in event["agent"] if a["requestor"])
        detail = _entities(event)[f"Consent/{cid}"]["detail"][0]["valueString"]
        by_agent[(who, detail)] = event
    assert by_agent[("Practitioner/paul", "deny")]["outcome"] == "4"
    glass = by_agent[("Practitioner/paul", "break-the-glass")]
    assert glass["outcome"] == "0" and glass["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert ("Practitioner/gray", "permit") in by_agent


def test_audit_events_are_append_only(world: World) -> None:
    world.gray.get("/Task/anna-task")
    event = audit_events(world, agent="Practitioner/gray")[0]
    path = f"/AuditEvent/{event['id']}"
    assert world.admin.put(path, json={**event, "outcome": "8"}).status_code == 405
    assert world.admin.patch(path, content=b'[{"op":"replace","path":"/outcome","value":"8"}]',
                             headers={"Content-Type": "application/json-patch+json"}).status_code == 405
    assert world.admin.delete(path).status_code == 405
    assert world.admin.put("/AuditEvent/forged", json={**event, "id": "forged"}).status_code == 405
    assert world.auditor.get(path).json()["outcome"] == "0"


def test_who_may_read_audit_events(world: World, mint: Mint, secure: Callable[..., httpx.Client]) -> None:
    world.gray.get("/Task/anna-task")
    world.gray.get("/Task/bob-task")
    eventually(lambda: audit_events(world, patient="bob"))
    mine = world.anna.get("/AuditEvent").json().get("entry", [])
    assert mine and all("Patient/anna" in _entities(e["resource"]) or any(
        a["who"].get("reference") == "Patient/anna" for a in e["resource"]["agent"]) for e in mine)
    assert world.anna.get("/AuditEvent", params={"patient": "bob"}).json().get("entry") is None
    assert world.clara.get("/AuditEvent").json().get("entry") is None
    in_context = secure(mint("patient/*.rs", patient="anna", fhir_user="Practitioner/gray"))
    assert in_context.get("/AuditEvent").json().get("entry") is None


def _backend_client(settings: Settings) -> tuple[str, RSAKey]:
    key = RSAKey.generate_key(2048, parameters={"kid": "audit-test", "alg": "RS384"})

    async def register() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            registered, _ = await ClientRegistry(client[settings.database]).register({
                "client_name": "Nightly export", "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt", "scope": "system/Task.rs",
                "jwks": {"keys": [key.as_dict(private=False)]}})
            return registered.client_id
        finally:
            await client.close()

    return asyncio.run(register()), key


def test_token_issuance_is_recorded(world: World, secure_server: RunningServer) -> None:
    token_url = secure_server.settings.base_url.rsplit("/fhir", 1)[0] + "/auth/token"
    client_id, key = _backend_client(secure_server.settings)
    now = int(time.time())
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"},
                           {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240,
                            "iat": now, "jti": uuid.uuid4().hex}, key, algorithms=["RS384"])
    issued = httpx.post(token_url, data={
        "grant_type": "client_credentials", "scope": "system/Task.rs", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert issued.status_code == 200, issued.text
    [login] = audit_events(world, type=f"{DCM}|110114", outcome="0")
    assert _agent(login, "UserOauthAgent")["policy"] == [jti(issued.json()["access_token"])]
    assert _agent(login, "110153")["who"]["identifier"]["value"] == client_id
    refused = httpx.post(token_url, data={"grant_type": "client_credentials", "client_id": "nobody"})
    assert refused.status_code == 401
    [event] = audit_events(world, type=f"{DCM}|110114", outcome="4")
    assert event["subtype"][0]["code"] == "110122" and event["outcome"] == "4"
    assert _agent(event, "110153")["who"]["identifier"]["value"] == "nobody"


def _patient_entities(event: dict[str, Any]) -> set[str]:
    return {ref for ref, e in _entities(event).items() if e.get("role", {}).get("code") == "1"}


def test_a_chain_records_what_it_returned_not_what_it_matched(world: World) -> None:
    # The chain matches Patient/anna, but none of her Tasks is completed: nothing leaves.
    reply = world.gray.get("/Task", params={"patient.family": "Adams", "status": "completed"})
    assert reply.status_code == 200
    assert reply.json().get("entry", []) == []
    [event] = audit_events(world, agent="Practitioner/gray", subtype="search-type")
    assert _patient_entities(event) == set()


def test_has_records_what_it_returned_not_what_it_matched(world: World) -> None:
    # `_has` matches Anna's and Bob's Tasks; only Practitioner/gray leaves the server.
    reply = world.gray.get("/Practitioner", params={"_has:Task:requester:status": "requested"})
    assert reply.status_code == 200
    assert {e["resource"]["id"] for e in reply.json()["entry"]} == {"gray"}
    [event] = audit_events(world, agent="Practitioner/gray", subtype="search-type")
    assert _patient_entities(event) == set()


def test_a_search_still_records_the_patients_it_returned(world: World) -> None:
    reply = world.gray.get("/Task", params={"patient.family": "Adams"})
    assert {e["resource"]["id"] for e in reply.json()["entry"]} == {"anna-task"}
    [event] = audit_events(world, agent="Practitioner/gray", subtype="search-type")
    assert _patient_entities(event) == {"Patient/anna"}
