"""The patch interaction with JSON Patch."""

from __future__ import annotations

import httpx

PATCH = {"content-type": "application/json-patch+json"}


def _task(client: httpx.Client) -> dict:
    return client.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order"}).json()


def test_patch_applies_and_versions(client: httpx.Client) -> None:
    task = _task(client)
    ops = [{"op": "replace", "path": "/status", "value": "accepted"},
           {"op": "add", "path": "/note", "value": [{"text": "call the patient"}]}]
    r = client.patch(f"/Task/{task['id']}", json=ops, headers=PATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "accepted"
    assert body["note"] == [{"text": "call the patient"}]
    assert body["meta"]["versionId"] == "2"
    assert list(body).index("status") < list(body).index("intent")  # replaced in place


def test_patch_failures(client: httpx.Client) -> None:
    task = _task(client)
    url = f"/Task/{task['id']}"
    # A failed test op: 422, nothing written.
    r = client.patch(url, json=[{"op": "test", "path": "/status", "value": "draft"}], headers=PATCH)
    assert r.status_code == 422
    # Result invalid for FHIR (unknown status code): rejected, nothing written.
    r = client.patch(url, json=[{"op": "replace", "path": "/status", "value": "nope"}], headers=PATCH)
    assert r.status_code == 422
    # Not a patch document.
    assert client.patch(url, json={"op": "add"}, headers=PATCH).status_code == 400
    # Changing the id is refused.
    r = client.patch(url, json=[{"op": "replace", "path": "/id", "value": "x"}], headers=PATCH)
    assert r.status_code == 400
    # Wrong media type.
    assert client.patch(url, json=[], headers={"content-type": "application/fhir+json"}).status_code == 415
    assert client.get(url).json()["meta"]["versionId"] == "1"
    # If-Match.
    ok = [{"op": "replace", "path": "/status", "value": "accepted"}]
    assert client.patch(url, json=ok, headers={**PATCH, "If-Match": 'W/"9"'}).status_code == 412
    assert client.patch(url, json=ok, headers={**PATCH, "If-Match": 'W/"1"'}).status_code == 200
    # Unknown resource.
    assert client.patch("/Task/nope", json=ok, headers=PATCH).status_code == 404
