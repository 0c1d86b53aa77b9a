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


def test_history_offset_pages_like_medplum(client: httpx.Client) -> None:
    """MedplumClient readHistory({offset}) sends _offset: it must not get page 1 again."""
    for _ in range(5):
        client.post("/Task", json=TASK)
    client.post("/Patient", json={"resourceType": "Patient"})
    for url in ("/Task/_history", "/_history"):
        everything = [e["fullUrl"] for e in client.get(url).json()["entry"]]
        pages = [[e["fullUrl"] for e in client.get(url, params={"_count": 2, "_offset": o}).json()
                  .get("entry", [])] for o in (0, 2, 4, 6)]
        assert [u for page in pages for u in page] == everything, url
        # The next link continues after the offset, not after page 1.
        bundle = client.get(url, params={"_count": 2, "_offset": 1}).json()
        nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
        assert "_offset" not in nxt
        assert [e["fullUrl"] for e in client.get(nxt).json()["entry"]] == everything[3:5]
    task = client.get("/Task").json()["entry"][0]["resource"]
    client.put(f"/Task/{task['id']}", json={**task, "status": "accepted"})
    versions = client.get(f"/Task/{task['id']}/_history", params={"_offset": 1}).json()["entry"]
    assert [e["response"]["etag"] for e in versions] == ['W/"1"']
    r = client.get("/_history", params={"_offset": "-1"})
    assert r.status_code == 400
    r = client.get("/_history", params={"_offset": "10001"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] == "too-costly"


def test_history_refuses_what_it_does_not_understand(client: httpx.Client) -> None:
    """A history Bundle (R4) has no place for a warning: unknown parameters are refused,
    not silently ignored, whatever Prefer: handling says."""
    client.post("/Task", json=TASK)
    for params, headers in (({"status": "requested"}, {}), ({"_total": "accurate"}, {}),
                            ({"_sort": "_lastUpdated"}, {}),
                            ({"_list": "x"}, {"prefer": "handling=strict"})):
        r = client.get("/Task/_history", params=params, headers=headers)
        assert r.status_code == 400, params
        assert r.json()["issue"][0]["code"] == "not-supported"
    assert client.get("/Task/_history", params={"_sort": "-_lastUpdated"}).status_code == 200


def test_history_count_zero_is_the_total(client: httpx.Client) -> None:
    task = client.post("/Task", json=TASK).json()
    client.put(f"/Task/{task['id']}", json={**task, "status": "accepted"})
    client.post("/Patient", json={"resourceType": "Patient"})
    for url, total in (("/_history", 3), ("/Task/_history", 2), (f"/Task/{task['id']}/_history", 2)):
        for params in ({"_count": 0}, {"_summary": "count"}):
            bundle = client.get(url, params=params).json()
            assert bundle["total"] == total, (url, params)
            assert "entry" not in bundle
