"""The read cache (fhir_server/storage/readcache.py): reads by id answered from memory,
correct across processes and writes, and never past the access decision.

Two server processes share one database; each has its own cache, invalidated only by the
outbox's change stream. What one process commits, the other's very next read answers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.storage.readcache import ReadCache
from tests.conftest import Mint, RunningServer, make_settings
from tests.consent.conftest import actor, consent

TASK = {"resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/p1"}}


def cache_of(running: RunningServer) -> ReadCache:
    cache = running.server.config.app.state.services.repository.read_cache  # type: ignore[attr-defined]
    assert isinstance(cache, ReadCache)
    return cache


@pytest.fixture(scope="module")
def pair(mongodb_uri: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two processes' worth of servers (each its own app, cache and change stream), one database."""
    database = "fhir_read_cache"
    with RunningServer(make_settings(mongodb_uri, database=database)) as a, \
            RunningServer(make_settings(mongodb_uri, database=database)) as b:
        yield a, b


@pytest.fixture
def clients(pair: tuple[RunningServer, RunningServer]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    a, b = pair
    with httpx.Client(base_url=a.settings.base_url, timeout=30) as ca, \
            httpx.Client(base_url=b.settings.base_url, timeout=30) as cb:
        yield ca, cb


def _version(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["meta"]["versionId"])


def test_a_read_by_id_is_answered_from_the_cache(
        pair: tuple[RunningServer, RunningServer], clients: tuple[httpx.Client, httpx.Client]) -> None:
    _, b = pair
    _, cb = clients
    tid = cb.post("/Task", json=TASK).json()["id"]
    cache = cache_of(b)
    first = cb.get(f"/Task/{tid}")
    hits = cache.hits
    again = cb.get(f"/Task/{tid}")
    assert cache.hits == hits + 1
    assert again.content == first.content
    assert again.headers["ETag"] == first.headers["ETag"] == 'W/"1"'


def test_a_write_in_one_process_is_read_by_the_next_request_in_the_other(
        clients: tuple[httpx.Client, httpx.Client], pair: tuple[RunningServer, RunningServer]) -> None:
    ca, cb = clients
    cache = cache_of(pair[1])
    tid = ca.post("/Task", json=TASK).json()["id"]
    for n in range(2, 12):
        assert _version(cb.get(f"/Task/{tid}")) == str(n - 1)  # cached in b
        assert _version(cb.get(f"/Task/{tid}")) == str(n - 1)
        done = ca.put(f"/Task/{tid}", json={**TASK, "id": tid, "description": f"v{n}"})
        assert done.status_code == 200
        read = cb.get(f"/Task/{tid}")
        # Seen once in a full run (7 for 8), never alone: say whether b's change feed had
        # handed over the event when it answered (the stream's pull) or not (the cache).
        assert _version(read) == str(n), (
            f"b's feed: latest event version {cache._latest.get(('Task', tid))}, "
            f"pulls {cache.feed.pulls}, synced {cache.feed.synced}, ticket now {cache.feed.ticket()}")
        assert read.json()["description"] == f"v{n}"
    assert ca.delete(f"/Task/{tid}").status_code == 200
    gone = cb.get(f"/Task/{tid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    # Created again (update as create after a delete): b follows.
    assert ca.put(f"/Task/{tid}", json={**TASK, "id": tid}).status_code == 201
    assert cb.get(f"/Task/{tid}").status_code == 200


def test_a_write_answers_once_its_own_change_feed_delivered_it(
        clients: tuple[httpx.Client, httpx.Client], pair: tuple[RunningServer, RunningServer]) -> None:
    # Why (storage/changes.py): a commit acknowledged while an earlier one is still in flight
    # is beyond every change stream's visible tail for a moment; once a's own stream showed
    # it, any pull b starts later shows it too. So a answers only after its feed delivered it.
    ca, _ = clients
    feed = cache_of(pair[0]).feed
    shown: list[tuple[str, str]] = []
    feed.subscribe(lambda events: shown.extend((e.get("t"), e.get("r")) for e in events), lambda: None)
    assert ca.get("/Task", params={"_count": "1"}).status_code == 200  # the stream is open
    for n in range(5):
        created = ca.post("/Task", json={**TASK, "description": f"w{n}"})
        assert created.status_code == 201, created.text
        assert ("Task", created.json()["id"]) in shown, n
        updated = ca.put(f"/Task/{created.json()['id']}", json={**created.json(), "description": "again"})
        assert updated.status_code == 200, updated.text
        assert shown.count(("Task", created.json()["id"])) == 2, n
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": TASK, "request": {"method": "POST", "url": "Task"}} for _ in range(3)]}
    done = ca.post("/", json=bundle)
    assert done.status_code == 200, done.text
    ids = [e["response"]["location"].split("/")[1] for e in done.json()["entry"]]
    assert all(("Task", i) in shown for i in ids)


def test_a_long_run_of_outbox_updates_does_not_hide_the_write_behind_it(
        clients: tuple[httpx.Client, httpx.Client], pair: tuple[RunningServer, RunningServer],
        mongo: MongoClient[dict[str, Any]]) -> None:
    # SecantusDB reads at most 200 of the outbox's oplog entries per getMore. A run of changes
    # that are not inserts (the matcher's marks, after a burst) filtered away on the server gave
    # an empty batch with the write behind it, read as "drained": b answered the old version.
    ca, cb = clients
    tid = ca.post("/Task", json=TASK).json()["id"]
    assert _version(cb.get(f"/Task/{tid}")) == "1"  # cached in b, b's stream pulled
    outbox = mongo[pair[0].settings.database]["outbox"]
    events = outbox.count_documents({})
    assert events > 0
    for n in range(-(-250 // events)):  # at least 250 updates in a row
        assert outbox.update_many({}, {"$set": {"run": n}}).modified_count == events
    assert ca.put(f"/Task/{tid}", json={**TASK, "id": tid, "description": "behind"}).status_code == 200
    read = cb.get(f"/Task/{tid}")
    assert _version(read) == "2"
    assert read.json()["description"] == "behind"


def test_racing_updates_leave_the_other_process_reading_the_last_version(
        clients: tuple[httpx.Client, httpx.Client], pair: tuple[RunningServer, RunningServer]) -> None:
    ca, cb = clients
    a, b = pair
    tid = ca.post("/Task", json=TASK).json()["id"]

    def update(n: int) -> int:
        with httpx.Client(base_url=a.settings.base_url, timeout=30) as c:
            return c.put(f"/Task/{tid}", json={**TASK, "id": tid, "description": f"u{n}"}).status_code

    def read(_: int) -> int:
        with httpx.Client(base_url=b.settings.base_url, timeout=30) as c:
            return c.get(f"/Task/{tid}").status_code

    with ThreadPoolExecutor(32) as pool:
        updates = pool.map(update, range(16))
        reads = pool.map(read, range(16))
        assert list(updates) == [200] * 16
        assert list(reads) == [200] * 16
    latest = ca.get(f"/Task/{tid}/_history", params={"_count": 1}).json()["entry"][0]["resource"]
    assert latest["meta"]["versionId"] == "17"
    read = cb.get(f"/Task/{tid}")
    assert _version(read) == "17"
    assert read.json()["description"] == latest["description"]


class _BrokenStream:
    alive = True

    async def try_next(self) -> None:
        raise ConnectionError("the database went away")

    async def close(self) -> None:
        return None


def test_a_change_stream_resumes_after_its_cursor_is_killed(
        pair: tuple[RunningServer, RunningServer], clients: tuple[httpx.Client, httpx.Client],
        mongo: MongoClient[dict[str, Any]]) -> None:
    ca, cb = clients
    _, b = pair
    tid = ca.post("/Task", json=TASK).json()["id"]
    assert _version(cb.get(f"/Task/{tid}")) == "1"
    stream = cache_of(b).feed._stream
    assert stream is not None
    mongo[b.settings.database].command("killCursors", "outbox", cursors=[stream._cursor.cursor_id])
    assert ca.put(f"/Task/{tid}", json={**TASK, "id": tid, "description": "after"}).status_code == 200
    read = cb.get(f"/Task/{tid}")
    assert _version(read) == "2"
    assert read.json()["description"] == "after"


def test_a_broken_change_stream_fails_closed(
        pair: tuple[RunningServer, RunningServer], clients: tuple[httpx.Client, httpx.Client]) -> None:
    ca, cb = clients
    _, b = pair
    tid = ca.post("/Task", json=TASK).json()["id"]
    assert _version(cb.get(f"/Task/{tid}")) == "1"
    cache = cache_of(b)
    assert cache.get("Task", tid) is not None
    cache.feed._stream = _BrokenStream()  # type: ignore[assignment]
    assert ca.put(f"/Task/{tid}", json={**TASK, "id": tid, "description": "after"}).status_code == 200
    hits = cache.hits
    for _ in range(3):  # from the database, while the stream is down (RETRY_SECONDS)
        read = cb.get(f"/Task/{tid}")
        assert _version(read) == "2"
        assert read.json()["description"] == "after"
    assert cache.hits == hits
    assert cache.get("Task", tid) is None  # forgotten, and nothing stored meanwhile
    cache.feed._failed_at = None  # the next request opens a new stream (no 5 s wait for later tests)
    assert _version(cb.get(f"/Task/{tid}")) == "2"
    assert cache.get("Task", tid) is not None


def test_the_cache_forgets_what_it_holds_past_its_size(mongodb_uri: str) -> None:
    settings = make_settings(mongodb_uri, database="fhir_read_cache_small", read_cache=3)
    with RunningServer(settings) as running, httpx.Client(base_url=settings.base_url, timeout=30) as c:
        ids = [c.post("/Task", json=TASK).json()["id"] for _ in range(5)]
        for tid in ids:
            assert c.get(f"/Task/{tid}").status_code == 200
        cache = cache_of(running)
        assert [cache.get("Task", tid) is not None for tid in ids] == [False, False, True, True, True]


def test_no_cache_when_turned_off(mongodb_uri: str) -> None:
    settings = make_settings(mongodb_uri, database="fhir_read_cache_off", read_cache=0)
    with RunningServer(settings) as running, httpx.Client(base_url=settings.base_url, timeout=30) as c:
        tid = c.post("/Task", json=TASK).json()["id"]
        assert c.get(f"/Task/{tid}").status_code == 200
        assert running.server.config.app.state.services.repository.read_cache is None  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the access decision still applies


def test_a_cached_resource_is_never_served_past_the_access_decision(
        secure_server: RunningServer, secure: Any, mint: Mint) -> None:
    admin = secure(mint("user/*.cruds", fhir_user="Practitioner/admin"))
    for patient in ("pa", "pb"):
        assert admin.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}).status_code == 201
    tid = admin.post("/Task", json={**TASK, "for": {"reference": "Patient/pb"}}).json()["id"]
    assert admin.get(f"/Task/{tid}").status_code == 200
    assert admin.get(f"/Task/{tid}").status_code == 200
    assert cache_of(secure_server).get("Task", tid) is not None  # cached
    # A patient-scoped token for another patient: the compartment filter refuses it, cached or not.
    other = secure(mint("patient/*.rs", patient="pa", fhir_user="Patient/pa"))
    assert other.get(f"/Task/{tid}").status_code == 404
    # A scope for another type: refused on release.
    patients_only = secure(mint("user/Patient.rs", fhir_user="Practitioner/admin"))
    assert patients_only.get(f"/Task/{tid}").status_code == 403
    # Anna-style OPTOUT with a deny for the practitioner, on pb: the cached Task is refused.
    deny = consent({"type": "deny", "actor": [actor("Practitioner/admin")]}, patient="pb")
    assert admin.post("/Consent", json=deny).status_code == 201
    refused = admin.get(f"/Task/{tid}")
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"


def test_one_change_stream_serves_the_consent_cache_too(
        secure_server: RunningServer, secure: Any, mint: Mint) -> None:
    admin = secure(mint("user/*.cruds", fhir_user="Practitioner/admin"))
    tid = admin.post("/Task", json=TASK).json()["id"]
    consents = _consent_cache(secure_server)
    queries, pulls = consents.syncs, cache_of(secure_server).feed.pulls
    for _ in range(5):
        assert admin.get(f"/Task/{tid}").status_code == 200
    # Every request synced through the feed (its pulls), none by the Consent cache's own query.
    assert consents.syncs == queries
    assert cache_of(secure_server).feed.pulls >= pulls + 5


def test_a_read_with_consent_waits_for_one_pull_not_two(
        secure_server: RunningServer, secure: Any, mint: Mint) -> None:
    # The Consent cache's sync and the read cache's lookup wait for the same pull: one taken
    # after the request's ticket (storage/changes.py), not one each.
    admin = secure(mint("user/*.cruds", fhir_user="Practitioner/admin"))
    tid = admin.post("/Task", json=TASK).json()["id"]
    assert admin.get(f"/Task/{tid}").status_code == 200
    feed = cache_of(secure_server).feed
    pulls, hits = feed.pulls, cache_of(secure_server).hits
    for _ in range(10):
        assert admin.get(f"/Task/{tid}").status_code == 200
    assert cache_of(secure_server).hits >= hits + 10  # answered from the cache, after a pull
    assert 10 <= feed.pulls - pulls <= 13, feed.pulls - pulls  # 20 when each cache pulled


def _consent_cache(running: RunningServer) -> Any:
    from interceptors.access import AccessInterceptor

    hooks = running.server.config.app.state.services.hooks  # type: ignore[attr-defined]
    for entries in hooks._hooks.values():
        for entry in entries:
            owner = getattr(entry.fn, "__self__", None)
            if isinstance(owner, AccessInterceptor) and owner.policy.consent is not None:
                return owner.policy.consent.cache
    raise AssertionError("no Consent engine")


def test_a_large_resource_is_not_held(
        pair: tuple[RunningServer, RunningServer], clients: tuple[httpx.Client, httpx.Client]) -> None:
    _, cb = clients
    _, b = pair
    big = cb.post("/Task", json={**TASK, "description": "x" * 300_000}).json()["id"]
    small = cb.post("/Task", json=TASK).json()["id"]
    for tid in (big, small, big):
        assert cb.get(f"/Task/{tid}").status_code == 200
    cache = cache_of(b)
    assert cache.get("Task", big) is None
    assert cache.get("Task", small) is not None
