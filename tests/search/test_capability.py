"""The CapabilityStatement lists every supported search parameter, generated from the registry."""

from __future__ import annotations

import httpx


def test_capability_lists_search_parameters(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    task = {p["name"]: p for p in resources["Task"]["searchParam"]}
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "owner", "status",
            "patient", "focus", "authored-on", "identifier"} <= set(task)
    assert task["owner"]["type"] == "reference"
    assert task["owner"]["definition"] == "http://hl7.org/fhir/SearchParameter/Task-owner"
    assert task["status"]["documentation"]
    assert "_text" not in task and "_content" not in task
    relationship = {p["name"]: p for p in resources["DocumentReference"]["searchParam"]}
    assert relationship["relationship"]["type"] == "composite"
    total = sum(len(r.get("searchParam", [])) for r in resources.values())
    assert total > 350  # 361 once _id and _lastUpdated stopped being listed twice per type
