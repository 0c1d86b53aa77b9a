"""A batch's independent writes share transactions (group commit), and no answer changes.

Observed through the public interceptor API: a deployment interceptor at IN_TRANSACTION
records which database session (transaction) committed each change. With group commit the
entries of one batch are committed in fewer transactions than entries; each entry is still
planned and recorded alone (its own status, its own refusal, its own call of the
IN_TRANSACTION hooks), and a round that loses a race falls back to each entry
alone, losing no write.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fhir_server.hooks import Pointcut, hook
from tests.conftest import RunningServer, make_settings
from tests.subscriptions.conftest import unique

FHIR = {"content-type": "application/fhir+json"}


class SessionRecorder:
    """Which transaction committed each change, and with which entry's context."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: dict[str, str] = {}  # "Type/id/version" -> the transaction's token
        self.calls: dict[str, int] = {}  # -> how many changes the hook call carrying it had

    @staticmethod
    def _token(session: Any) -> str:
        """A token per session object (set on it: id() of a freed session may be reused)."""
        token = getattr(session, "_group_commit_test", None)
        if token is None:
            token = uuid.uuid4().hex
            session._group_commit_test = token
        return str(token)

    @hook(Pointcut.IN_TRANSACTION)
    async def record(self, context: Any, changes: list[Any], session: Any, db: Any, writer: Any) -> None:
        with self.lock:
            for change in changes:
                key = f"{change.resource_type}/{change.id}/{change.version_id}"
                self.sessions[key] = self._token(session)
                self.calls[key] = len(changes)


@pytest.fixture(scope="module")
def recorded(mongodb_uri: str) -> Iterator[tuple[RunningServer, SessionRecorder]]:
    recorder = SessionRecorder()
    settings = make_settings(mongodb_uri, database=unique("fhir_group_"), batch_group_commit=True)
    with RunningServer(settings, extra_interceptors=[recorder]) as running:
        yield running, recorder


def _task(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **extra}


def _batch(http: httpx.Client, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = http.post("", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["entry"]
    return out


def test_entries_share_transactions_and_keep_their_own_answers(
        recorded: tuple[RunningServer, SessionRecorder]) -> None:
    running, recorder = recorded
    with httpx.Client(base_url=running.settings.base_url, timeout=60) as http:
        pinned = http.put("/Task/pinned", json=_task(id="pinned"), headers=FHIR)
        assert pinned.status_code == 201
        entries = [{"resource": _task(description=f"n{n}"), "request": {"method": "POST", "url": "Task"}}
                   for n in range(40)]
        # Refused by its own plan (If-Match of a version that is not current): 412 for it alone.
        entries.insert(7, {"resource": _task(id="pinned", status="cancelled"),
                           "request": {"method": "PUT", "url": "Task/pinned", "ifMatch": 'W/"9"'}})
        # Refused by validation (a status outside the required value set): 422 for it alone.
        entries.insert(20, {"resource": {"resourceType": "Task", "status": "no-such-status", "intent": "order"},
                            "request": {"method": "POST", "url": "Task"}})
        out = _batch(http, entries)
        statuses = [e["response"]["status"][:3] for e in out]
        assert statuses[7] == "412" and statuses[20] == "422", statuses
        assert statuses.count("201") == 40, statuses
        ids = [e["response"]["location"].split("/")[-3] for e in out if e["response"]["status"][:3] == "201"]
        assert len(set(ids)) == 40
        # Every created Task is stored, once, at version 1; the pinned one is untouched.
        found = http.get("/Task", params={"_id": ",".join(ids), "_count": "100"}).json()
        assert found["total"] == 40
        assert http.get("/Task/pinned").json()["meta"]["versionId"] == "1"
    sessions = {recorder.sessions[f"Task/{i}/1"] for i in ids}
    # Fewer transactions than entries: the entries running at once were committed together.
    assert len(sessions) < len(ids), len(sessions)
    # ... and the hooks saw each entry's change alone, with its own context, as if committed alone.
    assert {recorder.calls[f"Task/{i}/1"] for i in ids} == {1}


def test_lost_races_fall_back_to_each_entry_alone_and_lose_no_write(
        recorded: tuple[RunningServer, SessionRecorder]) -> None:
    running, _ = recorded
    shared = unique("shared")
    with httpx.Client(base_url=running.settings.base_url, timeout=120) as http:
        assert http.put(f"/Task/{shared}", json=_task(id=shared), headers=FHIR).status_code == 201

        def one(n: int) -> list[str]:
            entries = [{"resource": _task(id=shared, description=f"batch {n}"),
                        "request": {"method": "PUT", "url": f"Task/{shared}"}}]
            entries += [{"resource": _task(description=f"{n}-{k}"), "request": {"method": "POST", "url": "Task"}}
                        for k in range(3)]
            with httpx.Client(base_url=running.settings.base_url, timeout=120) as own:
                return [e["response"]["status"][:3] for e in _batch(own, entries)]

        # 16 batches at once, each updating the same Task beside its own creates: their
        # rounds collide on that Task, and every update must still land exactly once.
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
        assert all(r == ["200", "201", "201", "201"] for r in results), results
        history = http.get(f"/Task/{shared}/_history", params={"_count": "100"}).json()
        assert len(history["entry"]) == 17
        versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
        assert versions == list(range(1, 18))
        descriptions = {e["resource"].get("description") for e in history["entry"]}
        assert descriptions == {None, *(f"batch {n}" for n in range(16))}
