"""Formats, _pretty, _summary and _elements."""

from __future__ import annotations

import httpx

TASK = {
    "resourceType": "Task", "status": "requested", "intent": "order",
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Call</div>"},
    "description": "Call the patient", "priority": "urgent",
    "identifier": [{"system": "urn:t", "value": "1"}],
}


def test_json_variants_accepted(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    url = f"/Task/{task['id']}"
    for accept in ("application/fhir+json", "application/json", "*/*", "application/json+fhir"):
        assert client.get(url, headers={"accept": accept}).status_code == 200, accept
    assert client.get(url, headers={"accept": "application/json"}).headers["content-type"].startswith(
        "application/json"
    )
    assert client.get(url, params={"_format": "json"}).status_code == 200
    assert client.get(url, headers={"accept": "text/html;q=0.9, application/fhir+json"}).status_code == 200


def test_xml_refused_with_outcome(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    url = f"/Task/{task['id']}"
    r = client.get(url, headers={"accept": "application/fhir+xml"})
    assert r.status_code == 406
    assert "JSON only" in r.json()["issue"][0]["diagnostics"]
    assert client.get(url, params={"_format": "xml"}).status_code == 406
    assert client.get("/metadata", params={"_format": "application/fhir+xml"}).status_code == 406
    r = client.post("/Task", content=b"<Task xmlns='http://hl7.org/fhir'/>",
                    headers={"content-type": "application/fhir+xml"})
    assert r.status_code == 415
    r = client.post("/Task", content=b"status=draft", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_pretty(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    pretty = client.get(f"/Task/{task['id']}", params={"_pretty": "true"})
    assert b"\n  " in pretty.content
    assert pretty.json() == task
    assert b"\n" not in client.get(f"/Task/{task['id']}").content


def test_summary_and_elements_on_read(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    url = f"/Task/{task['id']}"
    summary = client.get(url, params={"_summary": "true"}).json()
    # In R4, Task.status and Task.description are summary elements; identifier, priority are not.
    assert summary["status"] == "requested"
    assert summary["description"] == "Call the patient"
    assert "identifier" not in summary and "priority" not in summary and "text" not in summary
    assert {"code": "SUBSETTED"}.items() <= summary["meta"]["tag"][0].items()
    text = client.get(url, params={"_summary": "text"}).json()
    assert text["text"] == TASK["text"] and "description" not in text
    assert text["status"] == "requested"  # mandatory elements stay
    data = client.get(url, params={"_summary": "data"}).json()
    assert "text" not in data and data["description"] == "Call the patient"
    assert client.get(url, params={"_summary": "false"}).json() == task
    elements = client.get(url, params={"_elements": "priority"}).json()
    assert elements["priority"] == "urgent"
    assert "description" not in elements and "identifier" not in elements
    assert elements["status"] == "requested" and elements["intent"] == "order"
    assert client.get(url, params={"_summary": "bogus"}).status_code == 400
