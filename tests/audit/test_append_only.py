"""AuditEvents are append-only in storage: no history copy, only the indexes the audit
queries need, and still readable as their own (single) version everywhere history is read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.access.decision import in_patient_compartment
from fhir_server.storage.audit_batches import BATCHES, document_of
from fhir_server.storage.database import Database
from tests.audit.conftest import audit_events
from tests.conftest import RunningServer
from tests.consent.conftest import World

EVENT: dict[str, Any] = {
    "resourceType": "AuditEvent", "recorded": "2026-11-20T10:00:00Z", "action": "E",
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "agent": [{"requestor": True, "who": {"display": "a device"}}],
    "source": {"observer": {"display": "elsewhere"}},
    "entity": [{"what": {"reference": "Patient/anna"}}],
}


def test_a_read_stores_its_event_without_a_history_copy(
        world: World, secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> None:
    assert world.gray.get("/Task/anna-task").status_code == 200
    [event] = [e for e in audit_events(world, subtype="read") if any(
        x.get("what", {}).get("reference", "").startswith("Task/anna-task") for x in e["entity"])]
    db = mongo[secure_server.settings.database]
    # Stored in its batch's document (storage.audit_batches), as a lone one would be.
    assert db[BATCHES].find_one({"_id": document_of(event["id"]), "e._id": event["id"]}) is not None
    assert "AuditEvent_history" not in db.list_collection_names()
    # Its one version reads back as vread, in its instance history and in the type's.
    assert world.auditor.get(f"/AuditEvent/{event['id']}/_history/1").json()["id"] == event["id"]
    assert world.auditor.get(f"/AuditEvent/{event['id']}/_history/2").status_code == 404
    history = world.auditor.get(f"/AuditEvent/{event['id']}/_history").json()
    assert [(e["resource"]["id"], e["request"]["method"]) for e in history["entry"]] == [(event["id"], "POST")]
    assert event["id"] in {e["resource"]["id"] for e in world.auditor.get(
        "/AuditEvent/_history", params={"_count": "500"}).json()["entry"]}


def test_audit_events_have_only_the_indexes_the_audit_queries_need(
        secure_server: RunningServer, mongo: MongoClient[dict[str, Any]], world: World) -> None:
    db = mongo[secure_server.settings.database]
    indexes = {ix["name"]: ix for ix in db["AuditEvent"].list_indexes()}
    assert sorted(tuple(ix["key"].items()) for ix in indexes.values()) == sorted([
        (("_id", 1),),
        (("ts", -1), ("_id", -1)),  # _lastUpdated order, type history
        # who saw this patient's data, when; and a patient's own events (no compartment index:
        # an AuditEvent's compartment is its `patient` parameter)
        (("sp.patient", 1), ("sp.date.e", -1)),
        (("sp.entity", 1),),  # every request a Consent decided: only events naming a Consent
    ])
    assert indexes["audit_entity_consent"]["partialFilterExpression"] == {
        "sp.entity": {"$gte": "Consent/", "$lt": "Consent0"}}
    # The audit queries of docs/consent.md are served by them.
    for query, index in (({"sp.entity": "Consent/c1"}, "audit_entity_consent"),
                         (in_patient_compartment("AuditEvent", "anna"), "audit_patient_date"),
                         ({"sp.patient": "Patient/anna", "sp.date.e": {"$gte": datetime(2026, 1, 1, tzinfo=UTC)}},
                          "audit_patient_date")):
        plan = db.command("explain", {"find": "AuditEvent", "filter": query})["queryPlanner"]["winningPlan"]
        assert "IXSCAN" in str(plan) and index in str(plan), (query, plan)


def test_only_events_naming_a_consent_hold_entity_index_entries(
        world: World, secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> None:
    # A read names its resource and patient as entities: neither is an index entry; an event
    # naming a Consent is, and the other entities are still searched (from the patient's).
    named = world.admin.post("/AuditEvent", json={**EVENT, "entity": [
        {"what": {"reference": "Patient/anna"}}, {"what": {"reference": "Consent/c-audit"}}]})
    assert named.status_code == 201, named.text
    assert world.gray.get("/Task/anna-task").status_code == 200
    [read] = [e for e in audit_events(world, subtype="read") if any(
        x.get("what", {}).get("reference", "").startswith("Task/anna-task") for x in e["entity"])]
    db = mongo[secure_server.settings.database]
    in_index = {d["_id"] for d in db["AuditEvent"].find(
        {"sp.entity": {"$gte": "Consent/", "$lt": "Consent0"}}, {"_id": 1}).hint("audit_entity_consent")}
    assert named.json()["id"] in in_index
    assert read["id"] not in in_index
    found = world.auditor.get("/AuditEvent", params={"entity": "Consent/c-audit"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [named.json()["id"]]
    by_task = world.auditor.get("/AuditEvent", params={
        "entity": read["entity"][0]["what"]["reference"], "patient": "Patient/anna"}).json()
    assert read["id"] in {e["resource"]["id"] for e in by_task["entry"]}


def test_a_client_posted_audit_event_is_stored_once_and_cannot_change(world: World) -> None:
    created = world.admin.post("/AuditEvent", json=EVENT)
    assert created.status_code == 201, created.text
    event = created.json()
    assert world.admin.put(f"/AuditEvent/{event['id']}", json={**event, "action": "R"}).status_code == 405
    assert world.admin.delete(f"/AuditEvent/{event['id']}").status_code == 405
    assert world.auditor.get(f"/AuditEvent/{event['id']}").json()["action"] == "E"


def test_append_only_holds_with_audit_off(client: httpx.Client, mongo: MongoClient[dict[str, Any]],
                                          server: RunningServer) -> None:
    # Auth off (so the audit interceptor is off): storage itself refuses a second version,
    # which would otherwise overwrite the only copy.
    created = client.post("/AuditEvent", json=EVENT)
    assert created.status_code == 201, created.text
    event = created.json()
    refused = client.put(f"/AuditEvent/{event['id']}", json={**event, "action": "R"})
    assert refused.status_code == 405, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert client.delete(f"/AuditEvent/{event['id']}").status_code == 405
    assert client.patch(f"/AuditEvent/{event['id']}", json=[{"op": "replace", "path": "/action", "value": "R"}],
                        headers={"Content-Type": "application/json-patch+json"}).status_code == 405
    # An update that says nothing new writes nothing, so it is no change (200, same version).
    same = client.put(f"/AuditEvent/{event['id']}", json=event)
    assert same.status_code == 200 and same.json()["meta"]["versionId"] == "1"
    assert client.get(f"/AuditEvent/{event['id']}").json()["action"] == "E"
    assert mongo[server.settings.database]["AuditEvent_history"].count_documents({}) == 0


def test_the_retired_audit_indexes_are_dropped_at_start_up(mongodb_uri: str,
                                                          mongo: MongoClient[dict[str, Any]]) -> None:
    # A database an earlier release made: its every-entity and compartment indexes on
    # AuditEvent cost each event an entry per entity and one more; they go at start-up.
    name = "fhir_retired_indexes"
    mongo.drop_database(name)
    mongo[name]["AuditEvent"].create_index([("sp.entity", 1)], name="s_sp_entity")
    mongo[name]["AuditEvent"].create_index([("compartments.Patient", 1), ("ts", -1)],
                                           name="s_compartments_Patient_ts_d")

    async def start() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            await Database(client, name).ensure_indexes()
        finally:
            await client.close()

    try:
        asyncio.run(start())
        names = {ix["name"] for ix in mongo[name]["AuditEvent"].list_indexes()}
        assert "s_sp_entity" not in names and "s_compartments_Patient_ts_d" not in names
        assert {"_id_", "ts_id"} <= names
    finally:
        mongo.drop_database(name)


def test_a_patients_audit_events_by_compartment_are_those_of_its_patient_parameter(
        world: World, secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> None:
    # The compartment search and $everything judge an AuditEvent's compartment by its
    # `patient` parameter (the index audit_patient_date), as the access decision does.
    assert world.gray.get("/Task/anna-task").status_code == 200
    # Once the read's event is stored (batched, by the audit writer), so both kinds are here.
    read = {e["id"] for e in audit_events(world, subtype="read") if any(
        x.get("what", {}).get("reference", "").startswith("Task/anna-task") for x in e["entity"])}
    by_parameter = world.auditor.get("/AuditEvent", params={"patient": "Patient/anna", "_count": "500"}).json()
    expected = {e["resource"]["id"] for e in by_parameter.get("entry", [])}
    assert read and read <= expected, "the read's event is not found by its patient"
    assert any(document_of(i) is None for i in expected), "no lone event about anna"
    compartment = world.auditor.get("/Patient/anna/AuditEvent", params={"_count": "500"})
    assert compartment.status_code == 200, compartment.text
    assert {e["resource"]["id"] for e in compartment.json().get("entry", [])} == expected
    db = mongo[secure_server.settings.database]
    # Lone events and batched ones (storage.audit_batches), each matched by the same filter.
    in_compartment = in_patient_compartment("AuditEvent", "anna")
    lone = {d["_id"] for d in db["AuditEvent"].find(in_compartment, {"_id": 1})}
    batched = {d["_id"] for d in db[BATCHES].aggregate([
        {"$unwind": "$e"}, {"$replaceRoot": {"newRoot": "$e"}}, {"$match": in_compartment}, {"$project": {"_id": 1}}])}
    assert expected <= lone | batched
