"""Batch and transaction entry URLs are resolved strictly inside [base]; fullUrl is unique (bdl-7)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

FHIR = {"content-type": "application/fhir+json"}

ESCAPES = [
    "Task/../../auth/jwks",
    "Task/%2e%2e/%2E%2E/auth/jwks",
    "Task/..%2f..%2fauth/jwks",
    "../auth/jwks",
    "./Task",
    "http://evil.example/fhir/Task",
    "https://127.0.0.1:1/other/Task",
    "//evil.example/Task",
    "\\\\evil.example\\Task",
    "Task\\..\\..\\auth\\jwks",
    "Task/%5c..%5c..%5cauth/jwks",
    "Task//x",
    "Task /x",
    "Task%20/x",
    "Task/%00",
]


def bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


@pytest.mark.parametrize("url", ESCAPES)
def test_batch_entry_leaving_base_fails_alone(client: httpx.Client, url: str) -> None:
    created = client.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order"},
                          headers=FHIR)
    assert created.status_code == 201
    r = client.post("", json=bundle("batch", [
        {"request": {"method": "GET", "url": url}},
        {"request": {"method": "GET", "url": f"Task/{created.json()['id']}"}},
    ]), headers=FHIR)
    assert r.status_code == 200
    first, second = r.json()["entry"]
    assert first["response"]["status"] == "400 Bad Request"
    outcome = first["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert "inside this server's base" in outcome["issue"][0]["diagnostics"]
    assert "resource" not in first
    # The other entry is independent and still runs.
    assert second["response"]["status"] == "200 OK"
    assert second["resource"]["resourceType"] == "Task"


@pytest.mark.parametrize("url", ESCAPES)
def test_transaction_entry_leaving_base_fails_the_transaction(client: httpx.Client, url: str) -> None:
    r = client.post("", json=bundle("transaction", [
        {"resource": {"resourceType": "Task", "status": "requested", "intent": "order"},
         "request": {"method": "POST", "url": "Task"}},
        {"request": {"method": "GET", "url": url}},
    ]), headers=FHIR)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/Task").json().get("entry", []) == []


def test_encoded_space_in_a_query_is_fine(client: httpx.Client) -> None:
    r = client.post("", json=bundle("batch", [
        {"request": {"method": "GET", "url": "Task?description=Follow%20up"}},
    ]), headers=FHIR)
    assert r.status_code == 200
    assert r.json()["entry"][0]["response"]["status"] == "200 OK"


def test_absolute_url_inside_base_still_works(client: httpx.Client) -> None:
    base = str(client.base_url).rstrip("/")
    r = client.post("", json=bundle("batch", [
        {"resource": {"resourceType": "Task", "status": "requested", "intent": "order"},
         "request": {"method": "POST", "url": f"{base}/Task"}},
    ]), headers=FHIR)
    assert r.status_code == 200
    assert r.json()["entry"][0]["response"]["status"] == "201 Created"


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_duplicate_full_url_is_refused(client: httpx.Client, kind: str) -> None:
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    r = client.post("", json=bundle(kind, [
        {"fullUrl": "urn:uuid:8d1a6fd2-1d5b-4b6a-9c3a-1f0b3f3a0001", "resource": task,
         "request": {"method": "POST", "url": "Task"}},
        {"fullUrl": "urn:uuid:8d1a6fd2-1d5b-4b6a-9c3a-1f0b3f3a0002", "resource": task,
         "request": {"method": "POST", "url": "Task"}},
        {"fullUrl": "urn:uuid:8d1a6fd2-1d5b-4b6a-9c3a-1f0b3f3a0001", "resource": task,
         "request": {"method": "POST", "url": "Task"}},
    ]), headers=FHIR)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["code"] == "invariant"
    assert "Bundle.entry[0] and Bundle.entry[2]" in issue["diagnostics"]
    assert "bdl-7" in issue["diagnostics"]
    assert client.get("/Task").json().get("entry", []) == []


def test_same_full_url_with_different_versions_is_allowed(client: httpx.Client) -> None:
    # bdl-7 allows one fullUrl twice when meta.versionId differs.
    entries = [
        {"fullUrl": "urn:uuid:8d1a6fd2-1d5b-4b6a-9c3a-1f0b3f3a0003",
         "resource": {"resourceType": "Task", "status": "requested", "intent": "order", "meta": {"versionId": v}},
         "request": {"method": "POST", "url": "Task"}}
        for v in ("1", "2")
    ]
    r = client.post("", json=bundle("batch", entries), headers=FHIR)
    assert r.status_code == 200
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created", "201 Created"]
