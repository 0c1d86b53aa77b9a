"""history at instance, type and system level: order, deletes, _count paging, _since, _at."""

from __future__ import annotations

import time

import httpx

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def _all_pages(client: httpx.Client, url: str, params: dict) -> list[dict]:
    entries: list[dict] = []
    page = client.get(url, params=params).json()
    while True:
        entries.extend(page.get("entry", []))
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            return entries
        page = client.get(nxt[0]).json()


def test_instance_history_newest_first(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    tid = task["id"]
    client.put(f"/Task/{tid}", json={**task, "status": "accepted"})
    client.delete(f"/Task/{tid}")
    bundle = client.get(f"/Task/{tid}/_history").json()
    assert bundle["type"] == "history"
    methods = [e["request"]["method"] for e in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']


def test_type_and_system_history_with_paging(client: httpx.Client) -> None:
    ids = [client.post("/Task", json=TASK).json()["id"] for _ in range(5)]
    client.post("/Patient", json={"resourceType": "Patient"})
    client.post("/Practitioner", json={"resourceType": "Practitioner"})
    task_entries = _all_pages(client, "/Task/_history", {"_count": 2})
    assert [e["resource"]["id"] for e in task_entries] == ids[::-1]
    system_entries = _all_pages(client, "/_history", {"_count": 3})
    assert len(system_entries) == 7
    types = [e["resource"]["resourceType"] for e in system_entries]
    assert types[:2] == ["Practitioner", "Patient"]
    stamps = [e["response"]["lastModified"] for e in system_entries]
    assert stamps == sorted(stamps, reverse=True)


def test_since_and_at(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    tid = task["id"]
    time.sleep(0.05)
    middle = client.get(f"/Task/{tid}").json()["meta"]["lastUpdated"]
    time.sleep(0.05)
    second = client.put(f"/Task/{tid}", json={**task, "status": "accepted"}).json()
    since = client.get(f"/Task/{tid}/_history", params={"_since": second["meta"]["lastUpdated"]}).json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["2"]
    # _at a moment between the two versions: the version current then was version 1.
    at_millis = middle[:-1] + "Z"
    at = client.get(f"/Task/{tid}/_history", params={"_at": at_millis}).json()
    assert "1" in [e["resource"]["meta"]["versionId"] for e in at["entry"]]
    assert client.get("/Task/_history", params={"_since": "yesterday"}).status_code == 400


def test_history_count_validation(client: httpx.Client) -> None:
    assert client.get("/_history", params={"_count": "-1"}).status_code == 400
    assert client.get("/_history", params={"_cursor": "forged"}).status_code == 400
