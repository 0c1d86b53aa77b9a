"""The audit writer stores a batch of AuditEvents as a few documents (fhir_server.storage.
audit_batches), and every query over AuditEvents answers exactly what it answered when each
event was a document of its own: by id, vread, history, search, sort, paging, totals, and
the access decision."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.audit import writer as audit_writer
from fhir_server.audit.settings import AuditSettings
from fhir_server.audit.writer import MAJORITY, AuditWriter
from fhir_server.config import Settings
from fhir_server.search import SearchEngine
from fhir_server.storage import audit_batches
from fhir_server.storage.audit_batches import BATCHES, document_of, prefilter
from fhir_server.storage.database import Database
from fhir_server.storage.pipeline import Versions, store_new
from tests.audit.conftest import audit_events
from tests.conftest import RunningServer
from tests.consent.conftest import World, eventually

BASE = "http://127.0.0.1/fhir"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
KEYS = [("ts", -1), ("_id", -1)]


def event(n: int, patient: str, *, pad: int = 0) -> dict[str, Any]:
    # Events recorded out of order (`recorded` is not the storage order): n * 7 mod 13 minutes.
    return {"resourceType": "AuditEvent", "id": "x", "action": "R",
            "recorded": (T0 + timedelta(minutes=n * 7 % 13, seconds=n)).isoformat().replace("+00:00", "Z"),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "agent": [{"requestor": True, "who": {"reference": "Practitioner/gray"}}],
            "source": {"observer": {"display": "here"}},
            "entity": [{"what": {"reference": f"Patient/{patient}"}},
                       *([{"what": {"reference": f"Consent/c{n % 4}"}}] if n % 5 == 0 else []),
                       {"what": {"identifier": {"value": "p" * pad or str(n)}}}]}


def run(work: Any) -> Any:
    return asyncio.run(work)


async def _writer(mongodb_uri: str, name: str, directory: Path) -> tuple[AsyncMongoClient[Any], Database, AuditWriter]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    await client.drop_database(name)
    database = Database(client, name)
    await database.ensure_indexes()
    versions = Versions(SearchEngine(Settings(base_url=BASE)))
    writer = AuditWriter(database, versions, AuditSettings(directory=directory, flush_interval=60,
                                                           batch_size=1_000_000))
    await writer.start()
    return client, database, writer


def _order(docs: list[dict[str, Any]]) -> list[str]:
    return [d["_id"] for d in sorted(docs, key=lambda d: (d["ts"], d["_id"]), reverse=True)]


def test_a_batch_is_a_few_documents_and_reads_as_single_events(mongodb_uri: str, tmp_path: Path) -> None:
    async def work() -> None:
        client, database, writer = await _writer(mongodb_uri, "fhir_audit_batches", tmp_path)
        try:
            events = [event(n, f"p{n % 3}") for n in range(1100)]
            for e in events:
                await writer.record(e)
            await writer.flush()
            # A client's own AuditEvent (a write's event, likewise) is a document of its own.
            versions = Versions(SearchEngine(Settings(base_url=BASE)))
            lone = versions.build("AuditEvent", "lone-1", event(7, "p1"), None, "create")
            await store_new(database, "AuditEvent", [lone], MAJORITY)
            ids = [e["id"] for e in events]
            batch = ids[0].split(".")[0]
            assert ids[:2] == [f"{batch}.0.0", f"{batch}.0.1"] and ids[500] == f"{batch}.1.0"
            assert ids[-1] == f"{batch}.2.99"
            db = database.db
            stored = await db[BATCHES].find({}).sort("_id").to_list()
            assert [(d["_id"], len(d["e"])) for d in stored] == [(f"{batch}.0", 500), (f"{batch}.1", 500), (f"{batch}.2", 100)]
            # Each patient and Consent once per document (one index entry each per batch).
            assert all(sorted(d["p"]) == ["Patient/p0", "Patient/p1", "Patient/p2"] for d in stored)
            assert all(sorted(d["c"]) == [f"Consent/c{i}" for i in range(4)] for d in stored)
            assert await db["AuditEvent"].count_documents({}) == 1  # the lone one only

            view = database.current("AuditEvent")
            every = await view.find({}, {"_id": 1, "ts": 1}).to_list()
            assert len(every) == 1101
            doc = await view.find_one({"_id": ids[650]})
            assert doc is not None and orjson.loads(doc["res"])["id"] == ids[650] and doc["v"] == 1
            assert await view.find_one({"_id": f"{batch}.1.999"}) is None
            assert await view.find_one({"_id": f"{batch}.9.0"}) is None
            assert await database.history("AuditEvent").find_one({"_id": "lone-1", "v": 1}) is not None
            some = await view.find({"_id": {"$in": [ids[1], ids[900], "lone-1", "nope"]}}, {"_id": 1}).to_list()
            assert {d["_id"] for d in some} == {ids[1], ids[900], "lone-1"}

            # A patient's events, newest first, paged by skip/limit across lone and batched.
            full = await view.find({"sp.patient": "Patient/p1"}, {"_id": 1, "ts": 1}).to_list()
            assert "lone-1" in {d["_id"] for d in full} and len(full) == 367 + 1
            page = await view.find({"sp.patient": "Patient/p1"}, {"sp": 0}).sort(KEYS).skip(5).limit(7).to_list()
            assert [d["_id"] for d in page] == _order(full)[5:12]
            assert all("sp" not in d and "res" in d for d in page)
            assert await view.count_documents({"sp.patient": "Patient/p1"}) == 368
            # Conditions an index cannot narrow still mean what they say.
            assert await view.count_documents({"sp.patient": {"$nin": ["Patient/p1"]}}) == 733
            assert await view.count_documents({"sp.entity": "Consent/c2"}) == len(
                [n for n in range(1100) if n % 5 == 0 and n % 4 == 2])
            assert await view.count_documents({"sp.entity": {"$ne": "Consent/c2"}}) == 1101 - 55
            middle = sorted(d["ts"] for d in every)[550]
            assert await view.count_documents({"ts": {"$gte": middle}}) == len(
                [d for d in every if d["ts"] >= middle])
            assert await view.count_documents({"ts": {"$lt": middle}}) == len(
                [d for d in every if d["ts"] < middle])
            cursor = await view.aggregate([{"$match": {"sp.patient": "Patient/p2"}}, {"$count": "n"}])
            assert (await cursor.to_list())[0]["n"] == 366
            streamed = [d["_id"] async for d in view.find({"sp.patient": "Patient/p0"}, {"_id": 1})]
            assert len(streamed) == 367

            # A replayed batch (stored before the crash) is stored once.
            again = [versions.build("AuditEvent", e["id"], e, None, "create").current for e in events]
            await audit_batches.store(database.audit_batches, again, MAJORITY)
            assert await view.count_documents({}) == 1101
        finally:
            await writer.stop()
            await client.drop_database("fhir_audit_batches")
            await client.close()

    run(work())


def test_a_batch_document_stays_small_whatever_its_events(mongodb_uri: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_writer, "CHUNK_BYTES", 20_000)

    async def work() -> None:
        client, database, writer = await _writer(mongodb_uri, "fhir_audit_chunks", tmp_path)
        try:
            events = [event(n, "p0", pad=3000) for n in range(20)]  # ~3.5 kB each
            for e in events:
                await writer.record(e)
            await writer.flush()
            sizes = [len(d["e"]) async for d in database.audit_batches.find({}).sort("_id")]
            assert sum(sizes) == 20 and len(sizes) > 3 and max(sizes) * 3500 < 20_000 + 3500
            assert len(await database.current("AuditEvent").find({"sp.patient": "Patient/p0"}).to_list()) == 20
        finally:
            await writer.stop()
            await client.drop_database("fhir_audit_chunks")
            await client.close()

    run(work())


def test_the_pre_filter_only_narrows_by_what_an_index_holds() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    assert prefilter({"_id": "b1.0.3"}) == {"_id": {"$in": ["b1.0"]}}
    assert prefilter({"_id": "4a1f-uuid"}) == {"_id": {"$in": []}}  # never a batched event
    assert prefilter({"$and": [{"sp.patient": "Patient/a"}, {"sp.entity": "Consent/c"}]}) == {"c": {"$in": ["Consent/c"]}}
    assert prefilter({"sp.patient": {"$in": ["Patient/a", "Patient/b"]}, "ts": {"$lt": at}}) == {
        "p": {"$in": ["Patient/a", "Patient/b"]}}
    assert prefilter({"ts": {"$lt": at}}) == {"ts": {"$lte": at}}
    assert prefilter({"ts": {"$gte": at, "$lt": at}}) == {"tz": {"$gte": at}}
    # Negations, other entities and other parameters: every batch is a candidate.
    for flt in ({"sp.patient": {"$nin": ["Patient/a"]}}, {"sp.patient": {"$ne": "Patient/a"}},
                {"sp.entity": "Task/t"}, {"sp.entity": {"$in": ["Consent/c", "Task/t"]}},
                {"$or": [{"sp.patient": "Patient/a"}, {"sp.agent": "Practitioner/x"}]},
                {"sp.patient": None}, {"sp.action": "R"}):
        assert prefilter(flt) == {}, flt
    assert document_of("b1.0.3") == "b1.0" and document_of("lone-1") is None and document_of("a.b") is None


def test_reads_through_the_api_are_batched_and_mean_what_they_meant(
        world: World, secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> None:
    # A client's own event about Anna (a document of its own) beside the reads' batched ones.
    posted = world.admin.post("/AuditEvent", json={**event(1, "anna"), "recorded": world.started})
    assert posted.status_code == 201, posted.text
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: world.gray.get("/Task/anna-task").status_code, range(8))) == {200}

    def reads() -> list[dict[str, Any]]:
        found = audit_events(world, subtype="read", patient="Patient/anna")
        return found if len([e for e in found if _reads_task(e)]) >= 8 else []

    found = [e for e in eventually(reads) if _reads_task(e)]
    assert len(found) == 8
    db = mongo[secure_server.settings.database]
    for e in found:
        doc_id = document_of(e["id"])
        assert doc_id is not None, e["id"]
        assert db["AuditEvent"].find_one({"_id": e["id"]}) is None
        assert db[BATCHES].count_documents({"_id": doc_id, "e._id": e["id"]}) == 1
    assert db["AuditEvent"].find_one({"_id": posted.json()["id"]}) is not None

    one = found[0]
    assert world.auditor.get(f"/AuditEvent/{one['id']}").json() == one
    assert world.auditor.get(f"/AuditEvent/{one['id']}/_history/1").json() == one
    assert world.auditor.get(f"/AuditEvent/{one['id']}/_history/2").status_code == 404
    history = world.auditor.get(f"/AuditEvent/{one['id']}/_history").json()
    assert [e["resource"]["id"] for e in history["entry"]] == [one["id"]]
    # Append-only as a lone one: no second version, no lone copy under its id.
    changed = {k: v for k, v in one.items() if k != "meta"} | {"action": "C"}
    assert world.admin.put(f"/AuditEvent/{one['id']}", json=changed).status_code == 405
    assert world.admin.delete(f"/AuditEvent/{one['id']}").status_code == 405
    assert db["AuditEvent"].find_one({"_id": one["id"]}) is None
    assert world.auditor.get(f"/AuditEvent/{one['id']}").json() == one
    # The access decision judges a batched event as a lone one: Anna (her own events) and
    # Paul (no AuditEvent scope) get for each what they get for the client's event.
    for person in (world.anna, world.paul, world.clara):
        assert person.get(f"/AuditEvent/{one['id']}").status_code == person.get(
            f"/AuditEvent/{posted.json()['id']}").status_code

    # Paged 3 at a time, newest first: the same events in the same order as one page, and
    # the total counts both kinds.
    params = {"patient": "Patient/anna", "date": f"ge{world.started}", "_sort": "-_lastUpdated"}
    def settled() -> dict[str, Any] | None:
        # The page and its total are two reads: a batch of the earlier requests' events that
        # lands between them counts in the total only. Asked again until none did.
        whole = world.auditor.get("/AuditEvent", params={**params, "_count": "200", "_total": "accurate"}).json()
        return whole if whole["total"] == len(whole["entry"]) else None

    whole = eventually(settled)
    assert whole is not None, "every page's total counted events its page did not show"
    everyone = [e["resource"]["id"] for e in whole["entry"]]
    assert {e["id"] for e in found} | {posted.json()["id"]} <= set(everyone)
    paged: list[str] = []
    bundle = world.auditor.get("/AuditEvent", params={**params, "_count": "3"}).json()
    while True:
        paged += [e["resource"]["id"] for e in bundle.get("entry", [])]
        link = next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)
        if link is None:
            break
        bundle = world.auditor.get(link).json()
    # (The searches are audited too: events newer than the whole page come first; the
    # rest are the same, in the same order, each once.)
    assert len(paged) == len(set(paged))
    assert [i for i in paged if i in set(everyone)] == everyone
    compartment = world.auditor.get("/Patient/anna/AuditEvent", params={"_count": "500"}).json()
    assert {e["id"] for e in found} <= {e["resource"]["id"] for e in compartment["entry"]}


def _reads_task(event: dict[str, Any]) -> bool:
    return any(x.get("what", {}).get("reference", "").startswith("Task/anna-task") for x in event["entity"])


def test_in_a_transaction_the_view_answers_the_same(mongodb_uri: str, tmp_path: Path) -> None:
    # A write's plan reads AuditEvents in a transaction, where MongoDB takes no `$unionWith`:
    # the view then merges two queries itself, to the same answer.
    async def work() -> None:
        client, database, writer = await _writer(mongodb_uri, "fhir_audit_session", tmp_path)
        try:
            events = [event(n, f"p{n % 2}") for n in range(30)]
            for e in events:
                await writer.record(e)
            await writer.flush()
            versions = Versions(SearchEngine(Settings(base_url=BASE)))
            await store_new(database, "AuditEvent", [versions.build("AuditEvent", "lone-2", event(3, "p1"), None,
                                                                    "create")], MAJORITY)
            view = database.current("AuditEvent")
            flt = {"sp.patient": "Patient/p1"}
            outside = await view.find(flt, {"_id": 1, "v": 1}).sort(KEYS).skip(2).limit(9).to_list()

            async def inside(session: Any) -> tuple[list[dict[str, Any]], int, Any]:
                page = await view.find(flt, {"_id": 1, "v": 1}, session=session).sort(KEYS).skip(2).limit(9).to_list()
                one = await view.find_one({"_id": events[7]["id"]}, {"_id": 1, "v": 1}, session=session)
                return page, await view.count_documents(flt, session=session), one

            page, count, one = await database.in_transaction(inside)
            assert page == outside and len(page) == 9 and set(page[0]) == {"_id", "v"}
            assert count == 16 and one == {"_id": events[7]["id"], "v": 1}
        finally:
            await writer.stop()
            await client.drop_database("fhir_audit_session")
            await client.close()

    run(work())


class _Counting:
    """The batches collection, noting the first `$match` of every pipeline run on it."""

    def __init__(self, batches: Any) -> None:
        self.batches, self.matches = batches, []

    async def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> Any:
        self.matches.append(pipeline[0].get("$match", {}) if pipeline else {})
        return await self.batches.aggregate(pipeline, **kwargs)


def test_a_page_newest_first_reads_the_newest_batches_only(mongodb_uri: str, tmp_path: Path) -> None:
    async def work() -> None:
        client, database, writer = await _writer(mongodb_uri, "fhir_audit_walk", tmp_path)
        try:
            versions = Versions(SearchEngine(Settings(base_url=BASE)))
            now = datetime.now(UTC).replace(microsecond=0)
            # 60 batches an hour apart, 20 events each: the newest an hour old, the oldest 2.5 days.
            for b in range(60):
                events = []
                for n in range(20):
                    doc = versions.build("AuditEvent", f"walk{b}.0.{n}", event(n, f"p{n % 2}"), None, "create").current
                    doc["ts"] = now - timedelta(hours=b + 1, seconds=n)
                    events.append(doc)
                await audit_batches.store(database.audit_batches, events, MAJORITY)
            lone = versions.build("AuditEvent", "lone-walk", event(3, "p1"), None, "create")
            lone.current["ts"] = now - timedelta(hours=2, milliseconds=500)
            await store_new(database, "AuditEvent", [lone], MAJORITY)
            view = database.current("AuditEvent")
            every = await view.find({}, {"_id": 1, "ts": 1}).to_list()
            assert len(every) == 1201
            counting = _Counting(view.batches)
            view.batches = counting
            for skip, limit in ((0, 10), (15, 10), (30, 12)):
                page = await view.find({}, {"sp": 0}).sort(KEYS).skip(skip).limit(limit).to_list()
                assert [d["_id"] for d in page] == _order(every)[skip:skip + limit]
                assert all("sp" not in d and "res" in d for d in page)
            # A filter no index narrows, and one on time (the seek windows' kind), newest first.
            p1 = await view.find({"sp.patient": {"$nin": ["Patient/p0"]}}, {"_id": 1, "ts": 1}).sort(KEYS).limit(5).to_list()
            assert [d["_id"] for d in p1] == [i for i in _order(every) if i == "lone-walk" or int(i.rsplit(".", 1)[1]) % 2][:5]
            since = now - timedelta(hours=3, seconds=5)
            recent = await view.find({"ts": {"$gte": since}}, {"_id": 1}).sort(KEYS).limit(100).to_list()
            assert [d["_id"] for d in recent] == [i for i in _order(every)
                                                 if next(d["ts"] for d in every if d["_id"] == i) >= since][:100]
            # What the windows matched: the few newest batches of 60, not all of them.
            assert counting.matches, "the page was not read window by window"
            read = [await database.audit_batches.count_documents(m) for m in counting.matches]
            assert max(read) <= 4 and sum(read) < 5 * len(read), read
            # Oldest first is still answered (over every batch: no walk for that direction).
            oldest = await view.find({}, {"_id": 1}).sort([("ts", 1), ("_id", 1)]).limit(3).to_list()
            assert [d["_id"] for d in oldest] == _order(every)[::-1][:3]
        finally:
            await writer.stop()
            await client.drop_database("fhir_audit_walk")
            await client.close()

    run(work())
