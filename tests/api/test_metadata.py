"""The CapabilityStatement says what is routed."""

from __future__ import annotations

import json
from typing import Any

import httpx

from fhir_server.resource_types import STORED_TYPES
from tests.conftest import EXAMPLES_DIR


def test_capability_statement(client: httpx.Client) -> None:
    r = client.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert "application/fhir+json" in cs["format"]
    rest = cs["rest"][0]
    # Every stored type, and Measure for its $care-gaps only (Measures are not stored).
    assert sorted(r["type"] for r in rest["resource"]) == sorted([*STORED_TYPES, "Measure"])
    measure = next(r for r in rest["resource"] if r["type"] == "Measure")
    assert set(measure) == {"type", "operation"}
    task = next(r for r in rest["resource"] if r["type"] == "Task")
    codes = {i["code"] for i in task["interaction"]}
    assert codes == {"read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type"}
    assert task["versioning"] == "versioned-update"
    assert task["conditionalDelete"] == "single"
    assert {"code": "history-system"} in rest["interaction"]
    # Every interaction it claims is really routed: a HEAD of metadata answers too.
    assert client.head("/metadata").status_code == 200


# Stored types the spec examples hold no instance of, not even inside a Bundle: the smallest
# valid resource stands in.
_MINIMAL: dict[str, dict[str, Any]] = {
    "Basic": {"code": {"text": "render state"}},
    "DetectedIssue": {"status": "final"},
    "Device": {"deviceName": [{"name": "coordination engine", "type": "user-friendly-name"}]},
    "HealthcareService": {"name": "Telehealth consultations"},
    "Questionnaire": {"status": "draft"},
    "QuestionnaireResponse": {"status": "completed"},
}


def _example(resource_type: str) -> dict:
    """A spec example of the type: a whole file, else an entry of an example Bundle."""
    files = [json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.json"))]
    bundles = [r for r in files if r.get("resourceType") == "Bundle"]
    entries: list[dict[str, Any]] = []
    while bundles:  # Bundles hold Bundles (a search result inside a transaction, ...)
        inner = [e["resource"] for b in bundles for e in b.get("entry", []) if "resource" in e]
        entries.extend(inner)
        bundles = [r for r in inner if r.get("resourceType") == "Bundle"]
    for resource in files + entries:
        if resource.get("resourceType") == resource_type:
            resource.pop("id", None)
            return resource
    if resource_type in _MINIMAL:
        return {"resourceType": resource_type, **_MINIMAL[resource_type]}
    raise AssertionError(f"no example of {resource_type}")


def _request(client: httpx.Client, rtype: str, rid: str, code: str, body: dict) -> httpx.Response:
    """A request of the interaction's kind on an existing resource (or a made-up id)."""
    # A changed version (an update that changes nothing is no change, and no refusal).
    resource = {**body, "id": rid, "language": "en-GB"}
    patch = [{"op": "add", "path": "/language", "value": "en"}]
    return {
        "read": lambda: client.get(f"/{rtype}/{rid}"),
        "vread": lambda: client.get(f"/{rtype}/{rid}/_history/1"),
        "update": lambda: client.put(f"/{rtype}/{rid}", json=resource),
        "patch": lambda: client.patch(f"/{rtype}/{rid}", json=patch,
                                      headers={"content-type": "application/json-patch+json"}),
        "delete": lambda: client.delete(f"/{rtype}/{rid}"),
        "history-instance": lambda: client.get(f"/{rtype}/{rid}/_history"),
        "history-type": lambda: client.get(f"/{rtype}/_history"),
        "create": lambda: client.post(f"/{rtype}", json=body),
        "search-type": lambda: client.get(f"/{rtype}"),
    }[code]()


def _operation(client: httpx.Client, rtype: str, rid: str, name: str, body: dict) -> httpx.Response:
    """A call of an advertised operation (its inputs may be refused; its route must exist)."""
    if name == "validate":
        return client.post(f"/{rtype}/$validate", json=body)
    if name == "everything":
        return client.get(f"/{rtype}/{rid}/$everything")
    if name in ("status", "get-ws-binding-token"):
        return client.get(f"/{rtype}/${name}")
    if name in ("find", "hold", "book"):  # scheduling: type-level, Parameters in
        return client.post(f"/{rtype}/${name}", json={"resourceType": "Parameters"})
    if name in ("cancel", "reschedule"):
        return client.post(f"/{rtype}/{rid}/${name}", json={"resourceType": "Parameters"})
    if name == "join":  # changes state (the visit's Encounter): POST only
        return client.post(f"/{rtype}/{rid}/$join")
    if name == "render-cursor":
        return client.post(f"/{rtype}/{rid}/${name}", json={"resourceType": "Parameters"})
    return client.get(f"/{rtype}/{rid}/${name}")


def _check_interactions(client: httpx.Client) -> dict[str, set[str]]:
    """For every type, each interaction the CapabilityStatement lists does not answer 405, and
    each interaction it leaves out does. Returns the interactions per type."""
    rest = client.get("/metadata").json()["rest"][0]
    every = {"read", "vread", "update", "patch", "delete", "history-instance", "history-type",
             "create", "search-type"}
    advertised: dict[str, set[str]] = {}
    for resource in rest["resource"]:
        rtype = resource["type"]
        if rtype not in STORED_TYPES:
            continue  # a type listed for its operations only (Measure/$care-gaps)
        body = _example(rtype)
        created = client.post(f"/{rtype}", json=body)
        rid = created.json()["id"] if created.status_code == 201 else "no-such-id"
        codes = [i["code"] for i in resource["interaction"]]
        assert len(codes) == len(set(codes)), rtype
        for code in sorted(every, key=lambda c: (c == "delete", c)):  # delete last
            status = _request(client, rtype, rid, code, body).status_code
            if code in codes:
                assert status != 405, (rtype, code)
            else:
                assert status == 405, (rtype, code)
        for operation in resource.get("operation", []):
            status = _operation(client, rtype, rid, operation["name"], body).status_code
            assert status != 405, (rtype, operation["name"])
            assert status != 404 or rid == "no-such-id", (rtype, operation["name"])  # routed
        if "update" not in codes:
            assert resource["conditionalUpdate"] is False and resource["updateCreate"] is False
            assert resource["conditionalDelete"] == "not-supported"
        advertised[rtype] = set(codes)
    for code in [i["code"] for i in rest["interaction"]]:
        r = {
            "transaction": lambda: client.post("", json={"resourceType": "Bundle", "type": "transaction"}),
            "batch": lambda: client.post("", json={"resourceType": "Bundle", "type": "batch"}),
            "search-system": lambda: client.get("", params={"_type": "Task"}),
            "history-system": lambda: client.get("/_history"),
        }[code]()
        assert r.status_code == 200, code
    return advertised


def test_every_advertised_interaction_is_allowed(client: httpx.Client) -> None:
    advertised = _check_interactions(client)
    # Even without the audit trail, storage keeps AuditEvents append-only (no history copy).
    assert advertised["AuditEvent"] == advertised["Task"] - {"update", "patch", "delete"}


def test_audit_events_are_advertised_append_only(secure: Any, mint: Any) -> None:
    """AuditEvents answer update/patch/delete with 405 (append-only): not listed."""
    advertised = _check_interactions(secure(mint("system/*.cruds")))
    assert advertised["AuditEvent"] == {
        "read", "vread", "history-instance", "history-type", "create", "search-type"}
    assert "update" in advertised["Task"]


def test_search_params_are_listed_once(client: httpx.Client) -> None:
    rest = client.get("/metadata").json()["rest"][0]
    for resource in rest["resource"]:
        if resource["type"] not in STORED_TYPES:
            continue  # listed for its operations only
        names = [p["name"] for p in resource["searchParam"]]
        assert len(names) == len(set(names)), (resource["type"], sorted(names))
        assert {"_id", "_lastUpdated"} <= set(names)
