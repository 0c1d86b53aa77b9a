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


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def test_a_browser_gets_json_on_every_json_endpoint(client: httpx.Client) -> None:
    """A browser's Accept ends with */*: JSON is acceptable, only less preferred."""
    task = client.post("/Task", json=TASK).json()
    for path in ("/metadata", f"/Task/{task['id']}", f"/Task/{task['id']}/_history/1", "/Task",
                 f"/Task/{task['id']}/_history", "/Task/_history", "/_history", ""):
        r = client.get(path, headers={"accept": BROWSER})
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("application/fhir+json")
    r = client.post("/Task", json=TASK, headers={"accept": BROWSER})
    assert r.status_code == 201


def test_q_values_rank_the_json_types(client: httpx.Client) -> None:
    cases = {
        "application/fhir+json;q=0.5, application/json": "application/json",
        "application/json;q=0.1, application/fhir+json;q=0.9": "application/fhir+json",
        "text/html, application/json;q=0.2": "application/json",
        "application/xml, */*;q=0.1": "application/fhir+json",
    }
    for accept, media in cases.items():
        r = client.get("/metadata", headers={"accept": accept})
        assert r.status_code == 200, accept
        assert r.headers["content-type"].startswith(media), accept
    # q=0 means "not acceptable": refusing every JSON type leaves nothing to answer with.
    for accept in ("application/fhir+json;q=0, application/json;q=0, text/html",
                   "*/*;q=0, application/xml"):
        assert client.get("/metadata", headers={"accept": accept}).status_code == 406, accept
    r = client.get("/metadata", headers={"accept": "application/fhir+json;q=0, */*"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
