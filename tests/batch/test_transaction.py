"""Transaction Bundles: all or nothing, order, references, conditionals, limits."""

from __future__ import annotations

import copy

import httpx
import pytest

from tests.conftest import load_example
from tests.helpers import count


def _post(client: httpx.Client, bundle: dict, **kw) -> httpx.Response:
    return client.post("", json=bundle, **kw)


def _entry(method: str, url: str, resource: dict | None = None, full_url: str | None = None, **request) -> dict:
    entry: dict = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        entry["resource"] = resource
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_referral_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    patient = "urn:uuid:6f0f0c6e-0000-4000-8000-000000000001"
    task = "urn:uuid:6f0f0c6e-0000-4000-8000-000000000002"
    bundle = _bundle(
        "transaction",
        _entry("POST", "Patient", {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "p1"}]},
               patient),
        _entry("POST", "Task", {"resourceType": "Task", "status": "requested", "intent": "order",
                                "for": {"reference": patient}}, task),
        _entry("POST", "Communication", {"resourceType": "Communication", "status": "completed",
                                         "subject": {"reference": patient}, "about": [{"reference": task}],
                                         "text": {"status": "generated",
                                                  "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{task}">task</a></div>'}}),
    )
    r = _post(client, bundle)
    assert r.status_code == 200, r.text
    response = r.json()
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created"] * 3
    locations = [e["response"]["location"] for e in response["entry"]]
    patient_ref = locations[0].split("/_history")[0]
    task_ref = locations[1].split("/_history")[0]
    stored_task = client.get(f"/{task_ref}").json()
    assert stored_task["for"] == {"reference": patient_ref}
    comm = client.get("/" + locations[2].split("/_history")[0]).json()
    assert comm["subject"]["reference"] == patient_ref
    assert comm["about"][0]["reference"] == task_ref
    assert task_ref in comm["text"]["div"] and "urn:uuid" not in comm["text"]["div"]


def test_failed_last_entry_of_100_leaves_nothing(client: httpx.Client) -> None:
    entries = [_entry("POST", "Task", {"resourceType": "Task", "status": "requested", "intent": "order"})
               for _ in range(99)]
    entries.append(_entry("POST", "Task", {"resourceType": "Task", "status": "not-a-status", "intent": "order"}))
    r = _post(client, _bundle("transaction", *entries))
    assert r.status_code == 422
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[99]" in outcome["issue"][0]["diagnostics"]
    assert count(client, "Task") == 0
    assert "entry" not in client.get("/Task/_history").json()


def test_processing_order_and_conditionals(client: httpx.Client) -> None:
    old = client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "old"}]}).json()
    kept = client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "kept"}]}).json()
    bundle = _bundle(
        "transaction",
        # A GET listed first still runs last: it sees the new Patient.
        _entry("GET", "Patient?identifier=urn:mrn|new"),
        _entry("POST", "Patient", {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "new"}]}),
        _entry("DELETE", "Patient?identifier=urn:mrn|old"),
        # Conditional create that matches: no write, the existing one is answered.
        _entry("POST", "Patient", {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "kept"}]},
               ifNoneExist="identifier=urn:mrn|kept"),
        # Conditional update with no match: created.
        _entry("PUT", "Patient?identifier=urn:mrn|cond", {"resourceType": "Patient",
                                                          "identifier": [{"system": "urn:mrn", "value": "cond"}]}),
    )
    r = _post(client, bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["total"] == 1
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] == "204 No Content"
    assert entries[3]["response"]["status"] == "200 OK"
    assert kept["id"] in entries[3]["response"]["location"]
    assert entries[4]["response"]["status"] == "201 Created"
    assert client.get(f"/Patient/{old['id']}").status_code == 410


def test_conditional_reference_resolution(client: httpx.Client) -> None:
    patient = client.post("/Patient", json={"resourceType": "Patient",
                                            "identifier": [{"system": "urn:mrn", "value": "42"}]}).json()
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient?identifier=urn:mrn|42"}}
    r = _post(client, _bundle("transaction", _entry("POST", "Task", task)))
    assert r.status_code == 200, r.text
    location = r.json()["entry"][0]["response"]["location"]
    assert client.get("/" + location.split("/_history")[0]).json()["for"]["reference"] == f"Patient/{patient['id']}"
    # No match fails the whole transaction.
    missing = copy.deepcopy(task)
    missing["for"]["reference"] = "Patient?identifier=urn:mrn|nobody"
    r = _post(client, _bundle("transaction", _entry("POST", "Task", task), _entry("POST", "Task", missing)))
    assert r.status_code == 412
    assert count(client, "Task") == 1


def test_same_resource_twice_fails(client: httpx.Client) -> None:
    p = {"resourceType": "Patient", "id": "twice"}
    r = _post(client, _bundle("transaction", _entry("PUT", "Patient/twice", p), _entry("PUT", "Patient/twice", p)))
    assert r.status_code == 400
    assert client.get("/Patient/twice").status_code == 404


def test_if_match_in_transaction(client: httpx.Client) -> None:
    client.put("/Patient/pm", json={"resourceType": "Patient", "id": "pm"})
    ok = _entry("PUT", "Patient/pm", {"resourceType": "Patient", "id": "pm", "active": True}, ifMatch='W/"1"')
    assert _post(client, _bundle("transaction", ok)).status_code == 200
    stale = _entry("PUT", "Patient/pm", {"resourceType": "Patient", "id": "pm", "active": False}, ifMatch='W/"1"')
    assert _post(client, _bundle("transaction", stale)).status_code == 412
    assert client.get("/Patient/pm").json()["active"] is True


def test_spec_transaction_example(client: httpx.Client) -> None:
    bundle = load_example("bundle-transaction.json")
    # As published it cannot succeed on an empty server (If-Match on a missing Patient/123a,
    # an operation entry): it fails as a whole and leaves nothing.
    r = _post(client, bundle)
    assert r.status_code == 404
    assert count(client, "Patient") == 0
    # Without those entries it succeeds.
    bundle["entry"] = [e for e in bundle["entry"]
                       if "ifMatch" not in e["request"] and "$" not in e["request"]["url"]]
    r = _post(client, bundle)
    assert r.status_code == 200, r.text
    assert len(r.json()["entry"]) == len(bundle["entry"])
    assert client.get("/Patient/123").status_code == 200


def test_bad_bundles(client: httpx.Client) -> None:
    assert _post(client, {"resourceType": "Patient"}).status_code == 400
    assert _post(client, {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert _post(client, _bundle("transaction", {"resource": {"resourceType": "Patient"}})).status_code == 400
    assert _post(client, _bundle("transaction", _entry("POST", "DiagnosticReport", {"resourceType": "DiagnosticReport"}))).status_code == 404
    assert _post(client, _bundle("transaction", _entry("POST", "Task", {"resourceType": "Patient"}))).status_code == 400
    assert count(client, "Patient") == 0


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_entry_limit_is_413(client: httpx.Client, kind: str) -> None:
    entries = [_entry("GET", "Patient/x")] * 1001
    assert _post(client, _bundle(kind, *entries)).status_code == 413


def test_batch_entries_are_independent(client: httpx.Client) -> None:
    existing = client.post("/Patient", json={"resourceType": "Patient"}).json()
    bundle = _bundle(
        "batch",
        _entry("POST", "Patient", {"resourceType": "Patient", "active": True}),
        _entry("POST", "Task", {"resourceType": "Task", "status": "bogus", "intent": "order"}),
        _entry("GET", f"Patient/{existing['id']}"),
        _entry("GET", "Patient/does-not-exist"),
        _entry("DELETE", f"Patient/{existing['id']}"),
    )
    r = _post(client, bundle)
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert r.json()["type"] == "batch-response"
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"].startswith(("400", "422"))
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[2]["resource"]["id"] == existing["id"]
    assert entries[3]["response"]["status"] == "404 Not Found"
    assert entries[4]["response"]["status"] == "200 OK"
    assert count(client, "Patient") == 1  # the new one; the existing one was deleted
