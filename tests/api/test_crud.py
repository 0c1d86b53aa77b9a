"""read, vread, create, update, delete: versioning, headers and status codes."""

from __future__ import annotations

import concurrent.futures
import re

import httpx

from tests.helpers import count

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def create(client: httpx.Client, resource: dict) -> dict:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_assigns_id_meta_and_headers(client: httpx.Client) -> None:
    r = client.post("/Task", json={**TASK, "id": "client-chosen"})
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"  # server assigns ids on create
    assert body["meta"]["versionId"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["meta"]["lastUpdated"])
    assert r.headers["etag"] == 'W/"1"'
    base = str(client.base_url).rstrip("/")
    assert r.headers["location"] == f"{base}/Task/{body['id']}/_history/1"
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_read_returns_what_was_created(client: httpx.Client) -> None:
    created = create(client, TASK)
    r = client.get(f"/Task/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'


def test_update_increments_version_and_vread_keeps_old(client: httpx.Client) -> None:
    created = create(client, TASK)
    tid = created["id"]
    r = client.put(f"/Task/{tid}", json={**created, "status": "accepted"})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    old = client.get(f"/Task/{tid}/_history/1")
    assert old.status_code == 200 and old.json()["status"] == "requested"
    assert client.get(f"/Task/{tid}/_history/2").json()["status"] == "accepted"
    assert client.get(f"/Task/{tid}/_history/3").status_code == 404
    assert client.get(f"/Task/{tid}/_history/x").status_code == 404


def test_update_without_change_keeps_version(client: httpx.Client) -> None:
    created = create(client, TASK)
    r = client.put(f"/Task/{created['id']}", json=created)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "1"


def test_update_as_create_with_client_id(client: httpx.Client) -> None:
    r = client.put("/Task/my-task.1", json={**TASK, "id": "my-task.1"})
    assert r.status_code == 201
    assert r.json()["id"] == "my-task.1"
    assert client.get("/Task/my-task.1").status_code == 200


def test_update_id_must_match_url(client: httpx.Client) -> None:
    assert client.put("/Task/a1", json={**TASK, "id": "b2"}).status_code == 400
    assert client.put("/Task/a1", json=TASK).status_code == 400
    assert client.get("/Task/a1").status_code == 404


def test_if_match(client: httpx.Client) -> None:
    created = create(client, TASK)
    tid = created["id"]
    ok = client.put(f"/Task/{tid}", json={**created, "status": "accepted"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/Task/{tid}", json={**created, "status": "rejected"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Task/{tid}").json()["status"] == "accepted"
    assert client.put(f"/Task/{tid}", json=created, headers={"If-Match": "banana"}).status_code == 400


def test_concurrent_writers_with_if_match_lose_no_update(client: httpx.Client) -> None:
    created = create(client, TASK)
    tid = created["id"]
    base_url = str(client.base_url)

    def writer(n: int) -> int:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            body = {**created, "description": f"writer {n}"}
            return c.put(f"/Task/{tid}", json=body, headers={"If-Match": 'W/"1"'}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(writer, range(8)))
    assert codes.count(200) == 1, codes
    assert codes.count(412) == 7, codes
    history = client.get(f"/Task/{tid}/_history").json()
    assert len(history["entry"]) == 2


def test_concurrent_updates_without_if_match_all_land(client: httpx.Client) -> None:
    created = create(client, TASK)
    tid = created["id"]
    base_url = str(client.base_url)

    def writer(n: int) -> int:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            return c.put(f"/Task/{tid}", json={**created, "description": f"w{n}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(writer, range(6)))
    assert codes == [200] * 6
    current = client.get(f"/Task/{tid}").json()
    assert current["meta"]["versionId"] == "7"
    versions = [e["resource"]["meta"]["versionId"] for e in client.get(f"/Task/{tid}/_history").json()["entry"]]
    assert versions == [str(v) for v in range(7, 0, -1)]


def test_delete_then_gone_history_kept_search_misses(client: httpx.Client) -> None:
    created = create(client, {**TASK, "identifier": [{"system": "urn:t", "value": "d1"}]})
    tid = created["id"]
    r = client.delete(f"/Task/{tid}")
    assert r.status_code == 200
    assert r.json()["resourceType"] == "OperationOutcome"
    gone = client.get(f"/Task/{tid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/Task/{tid}/_history/1").status_code == 200
    history = client.get(f"/Task/{tid}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert count(client, "Task", identifier="urn:t|d1") == 0
    # Deleting again, or deleting what never existed, is an idempotent no-op (R4 http.html#delete).
    assert client.delete(f"/Task/{tid}").status_code == 200
    never = client.delete("/Task/never-was")
    assert never.status_code == 200 and "nothing was deleted" in never.json()["issue"][0]["diagnostics"]
    assert client.get("/Task/never-was").status_code == 404
    # Recreate through update: versions continue.
    again = client.put(f"/Task/{tid}", json={**TASK, "id": tid})
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


def test_delete_prefer_minimal_is_204(client: httpx.Client) -> None:
    created = create(client, TASK)
    r = client.delete(f"/Task/{created['id']}", headers={"Prefer": "return=minimal"})
    assert r.status_code == 204
    assert r.content == b""


def test_conditional_read_304(client: httpx.Client) -> None:
    created = create(client, TASK)
    url = f"/Task/{created['id']}"
    assert client.get(url, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(url, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    last_modified = client.get(url).headers["last-modified"]
    assert client.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    early = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(url, headers={"If-Modified-Since": early}).status_code == 200


def test_head_read(client: httpx.Client) -> None:
    created = create(client, TASK)
    r = client.head(f"/Task/{created['id']}")
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"1"'
    assert r.content == b""


def test_prefer_return(client: httpx.Client) -> None:
    minimal = client.post("/Task", json=TASK, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert "location" in minimal.headers
    outcome = client.post("/Task", json=TASK, headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    rep = client.post("/Task", json=TASK, headers={"Prefer": "return=representation"})
    assert rep.json()["resourceType"] == "Task"
    assert client.post("/Task", json=TASK, headers={"Prefer": "return=everything"}).status_code == 400
