"""The CapabilityStatement says what is routed."""

from __future__ import annotations

import httpx

from fhir_server.resource_types import STORED_TYPES


def test_capability_statement(client: httpx.Client) -> None:
    r = client.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert "application/fhir+json" in cs["format"]
    rest = cs["rest"][0]
    assert sorted(r["type"] for r in rest["resource"]) == sorted(STORED_TYPES)
    task = next(r for r in rest["resource"] if r["type"] == "Task")
    codes = {i["code"] for i in task["interaction"]}
    assert codes == {"read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type"}
    assert task["versioning"] == "versioned-update"
    assert task["conditionalDelete"] == "single"
    assert {"code": "history-system"} in rest["interaction"]
    # Every interaction it claims is really routed: a HEAD of metadata answers too.
    assert client.head("/metadata").status_code == 200
