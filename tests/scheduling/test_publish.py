"""SMART Scheduling Links: the $bulk-publish manifest, its NDJSON files (Location, Schedule,
Slot with booking-deep-link), `_since`; and the operations in the CapabilityStatement."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.scheduling.conftest import Practice

Doc = dict[str, Any]
DEEP_LINK = "http://fhir-registry.smarthealthit.org/StructureDefinition/booking-deep-link"


def lines(api: httpx.Client, url: str) -> list[Doc]:
    response = api.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_manifest_files_and_since(api: httpx.Client) -> None:
    practice = Practice(api)
    _, slots = practice.practitioner(slots=2)
    manifest = api.get("/$bulk-publish")
    assert manifest.status_code == 200, manifest.text
    body = manifest.json()
    assert body["error"] == [] and body["transactionTime"]
    outputs = {o["type"]: o["url"] for o in body["output"]}
    assert set(outputs) == {"Location", "Schedule", "Slot"}
    base = str(api.base_url)
    published = lines(api, outputs["Slot"].removeprefix(base))
    mine = {s["id"]: s for s in published if s["id"] in slots}
    assert set(mine) == set(slots)
    for slot in mine.values():
        link = next(e["valueUrl"] for e in slot["extension"] if e["url"] == DEEP_LINK)
        assert link == f"https://portal.example/book?slot={slot['id']}"
    assert practice.video in {loc["id"] for loc in lines(api, outputs["Location"].removeprefix(base))}
    # _since: only what changed since then, and the file URLs carry it.
    time.sleep(0.01)
    since = body["transactionTime"]
    later = Practice(api)
    _, new_slots = later.practitioner(slots=1)
    narrowed = api.get("/$bulk-publish", params={"_since": since}).json()
    url = next(o["url"] for o in narrowed["output"] if o["type"] == "Slot")
    assert "_since=" in url
    assert {s["id"] for s in lines(api, url.removeprefix(base))} == set(new_slots)
    assert api.get("/$bulk-publish", params={"_since": "yesterday"}).status_code == 400
    assert api.get("/$bulk-publish/Patient.ndjson").status_code == 404


def test_capability_statement_lists_the_operations(api: httpx.Client) -> None:
    statement = api.get("/metadata").json()
    appointment = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Appointment")
    operations = {o["name"]: o["definition"] for o in appointment["operation"]}
    assert operations["find"] == "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/appointment-find"
    assert operations["hold"].endswith("appointment-hold") and operations["book"].endswith("appointment-book")
    assert operations["cancel"].endswith("appointment-cancel")
    assert operations["reschedule"].endswith("appointment-reschedule")
    system = {o["name"] for o in statement["rest"][0].get("operation", [])}
    assert "bulk-publish" in system


def test_our_operation_definitions_are_shipped_and_valid() -> None:
    from pathlib import Path

    from fhir_server.api.scheduling import OURS, SCHEDULING_OPERATIONS
    from fhir_server.validation import Validator

    profiles = Path(__file__).resolve().parents[2] / "profiles"
    validator = Validator(profiles)
    for name, url in SCHEDULING_OPERATIONS.items():
        if not url.startswith(OURS):
            continue
        definition = json.loads((profiles / f"OperationDefinition-{url.removeprefix(OURS)}.json").read_text())
        assert definition["url"] == url and definition["code"] == name
        result = validator.validate(definition, resource_type="OperationDefinition")
        assert not [i for i in result.issues if i.is_error], result.issues
