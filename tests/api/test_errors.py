"""Bad input: always an OperationOutcome with the right status; never a 500 or a partial write."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest

from tests.conftest import RunningServer
from tests.helpers import count
from tests.subscriptions.conftest import wait_until

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}
JSON = {"content-type": "application/fhir+json"}


def _nested(depth: int) -> dict:
    node: dict = {"url": "http://x", "valueString": "leaf"}
    for _ in range(depth):
        node = {"url": "http://x", "extension": [node]}
    return {**TASK, "extension": [node]}


BAD_BODIES = [
    ("malformed json", b"{\"resourceType\": \"Task\",", 400),
    ("empty body", b"", 400),
    ("not an object", b"[1, 2, 3]", 400),
    ("no resourceType", json.dumps({"status": "requested"}).encode(), 400),
    ("wrong resourceType for URL", json.dumps({"resourceType": "Patient"}).encode(), 400),
    ("unknown element", json.dumps({**TASK, "colour": "blue"}).encode(), 400),
    ("key starting with $", json.dumps({**TASK, "$where": "1==1"}).encode(), 400),
    ("key containing a dot", json.dumps({**TASK, "a.b": 1}).encode(), 400),
    ("operator object as value", json.dumps({**TASK, "status": {"$gt": ""}}).encode(), 400),
    ("wrong type", json.dumps({**TASK, "status": 5}).encode(), 400),
    ("NUL in string", json.dumps({**TASK, "description": "a\u0000b"}).encode(), 400),
    ("null value", json.dumps({**TASK, "description": None}).encode(), 400),
    ("empty string", json.dumps({**TASK, "description": ""}).encode(), 400),
    ("empty array", json.dumps({**TASK, "note": []}).encode(), 400),
    ("bad date", json.dumps({**TASK, "authoredOn": "2026-13-45"}).encode(), 400),
    ("bad id in contained", json.dumps({**TASK, "contained": [{"resourceType": "Patient", "id": "a b"}]}).encode(), 400),
    ("deep nesting", json.dumps(_nested(200)).encode(), 400),
    ("very deep nesting", b"[" * 5000 + b"]" * 5000, 400),
    ("integer beyond 64 bits", b'{"resourceType":"Task","status":"requested","intent":"order","restriction":{"repetitions":1' + b"0" * 30 + b"}}", 400),
    ("integer as decimal", json.dumps({**TASK, "restriction": {"repetitions": 2.5}}).encode(), 400),
    ("invalid utf-8", b'{"resourceType":"Task","description":"\xff\xfe"}', 400),
    ("missing mandatory status", json.dumps({"resourceType": "Task", "intent": "order"}).encode(), 400),
]


@pytest.mark.parametrize(("name", "body", "status"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_create_bodies(client: httpx.Client, name: str, body: bytes, status: int) -> None:
    r = client.post("/Task", content=body, headers=JSON)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("error", "fatal")
    # Nothing was written: no current version, no history.
    assert count(client, "Task") == 0
    assert "entry" not in client.get("/Task/_history").json()


def test_invalid_content_names_the_location(client: httpx.Client) -> None:
    r = client.post("/Task", json={**TASK, "status": "nope", "input": [{"valueString": "x"}]})
    assert r.status_code == 400
    expressions = [e for i in r.json()["issue"] for e in i.get("expression", [])]
    assert any("Task.status" in e for e in expressions), expressions
    assert any("Task.input[0]" in e for e in expressions), expressions


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = {**TASK, "description": "x" * (3 * 1024 * 1024)}
    r = client.post("/Task", json=big)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_huge_array_is_not_a_500(client: httpx.Client) -> None:
    many = {**TASK, "note": [{"text": f"n{i}"} for i in range(20000)]}
    r = client.post("/Task", json=many)
    assert r.status_code == 201
    assert len(client.get(f"/Task/{r.json()['id']}").json()["note"]) == 20000


# An id outside FHIR's [A-Za-z0-9\-\.]{1,64} is a bad request (400); an escaped path that
# decodes to other path segments names no resource route at all (404).
@pytest.mark.parametrize(
    ("bad_id", "status"),
    [("a b", 400), ("a_b", 400), ("x" * 65, 400), ("é", 400), ("a$b", 400), ("..%2F..%2Fetc", 404)],
)
def test_bad_ids(client: httpx.Client, bad_id: str, status: int) -> None:
    r = client.get(f"/Task/{bad_id}")
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.put(f"/Task/{bad_id}", json={**TASK, "id": bad_id})
    assert r.status_code == status
    assert count(client, "Task") == 0


def test_unknown_type_and_paths(client: httpx.Client) -> None:
    for path in ("/DiagnosticReport/1", "/DiagnosticReport", "/NotAType", "/Task/1/_history/1/extra"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["resourceType"] == "OperationOutcome"
    r = client.post("/DiagnosticReport", json={"resourceType": "DiagnosticReport"})
    assert r.status_code == 404
    assert "not supported" in r.json()["issue"][0]["diagnostics"]


def test_method_not_allowed(client: httpx.Client) -> None:
    r = client.post("/Task/abc")
    assert r.status_code == 405
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.delete("/metadata").status_code == 405


def test_unknown_version_and_deleted_version(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    client.delete(f"/Task/{task['id']}")
    assert client.get(f"/Task/{task['id']}/_history/2").status_code == 410
    assert client.get(f"/Task/{task['id']}/_history/99999999999999999999").status_code == 404


def test_validate_operation_stores_nothing(client: httpx.Client) -> None:
    ok = client.post("/Task/$validate", json=TASK)
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = client.post("/Task/$validate", json={**TASK, "status": "nope"})
    assert bad.status_code == 200
    assert any(i["severity"] == "error" for i in bad.json()["issue"])
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": TASK}]}
    assert client.post("/Task/$validate", json=wrapped).json()["issue"][0]["severity"] == "information"
    assert client.post("/Task/$validate", json={"resourceType": "Patient"}).status_code == 400
    assert count(client, "Task") == 0


def test_a_client_gone_before_its_body_is_in_is_no_server_error(
        client: httpx.Client, server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """A browser tab closed mid-request: nothing is written, nothing logged as a bug."""
    before = count(client, "Task")
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", server.settings.port)) as raw:
            raw.sendall(b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                        b"Content-Length: 5000\r\n\r\n" + b'{"resourceType": "Task", "status": ')
        # The connection closes with the body cut short: the server is reading it then.
        wait_until(lambda: "client disconnected during POST /fhir/Task" in caplog.text, timeout=10,
                   what="the disconnect logged")
    assert "unhandled error" not in caplog.text
    assert count(client, "Task") == before
