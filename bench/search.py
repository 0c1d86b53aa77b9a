"""Search benchmark: the coordination worklists at 16 concurrent clients, at growing sizes.

Loads coordination resources (Tasks, Appointments, CarePlans, CareTeams, Communications over
5,000 Patients and 200 Practitioners) straight into the database with `insert_many`, each
document built by the server's own write-path code (`stamp_meta`, `SearchEngine.index_fields`,
`compartments`), because loading 100,000+ resources through HTTP would take hours. Only the
current collections are filled (search never reads history), and the sort-key bucket
directory is noted as the write pipeline would (storage.sort_buckets.rebuild). Then starts
`fhir-server serve` twice on that database, with seek pagination (docs/search.md) and without
it (FHIR_SEARCH_SEEK=0: the same-run baseline), and measures each worklist query on both,
interleaved (median, p99, throughput, CPU per request of server + database from /proc),
beside GET-by-id and the raw driver running a worklist's filter; prints the planner's choice
(explain) for each worklist filter and what deep pages cost.

    .venv/bin/python bench/search.py [--sizes 100000,1000000] [--clients 16] [--seconds 10]
        [--data-dir DIR --loaded N] [--only NAME] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import BulkWriteError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import report, run_clients
from bench.servers import wait_ready
from fhir_server.config import Settings
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.search import SearchEngine, valueseek
from fhir_server.search.seek import bucket_of, bucketed_fields
from fhir_server.search.valueseek import values_at
from fhir_server.storage import sort_buckets, sort_values
from fhir_server.storage.documents import stamp_meta

BATCH = 5_000
PATIENTS = 5_000
PRACTITIONERS = 200
MIX = (("Task", 0.40), ("Appointment", 0.25), ("Communication", 0.20), ("CarePlan", 0.10),
       ("CareTeam", 0.05))
EPOCH = datetime(2025, 7, 1, tzinfo=UTC)
Op = Callable[[int, int], Awaitable[None]]


def ref(kind: str, n: int) -> dict[str, str]:
    return {"reference": f"{kind}/{'p' if kind == 'Patient' else 'pr'}{n}"}


def make(rtype: str, n: int, rng: random.Random) -> dict[str, Any]:
    patient = rng.randrange(PATIENTS)
    practitioner = rng.randrange(PRACTITIONERS)
    when = EPOCH + timedelta(minutes=rng.randrange(365 * 24 * 60))
    stamp = when.strftime("%Y-%m-%dT%H:%M:00Z")
    if rtype == "Task":
        return {"resourceType": "Task", "status": rng.choice(
                    ["requested", "in-progress", "completed", "cancelled", "on-hold"]),
                "intent": "order", "priority": "routine", "for": ref("Patient", patient),
                "owner": ref("Practitioner", practitioner), "authoredOn": stamp,
                "identifier": [{"system": "urn:bench:task", "value": f"t{n}"}],
                "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                     "code": "fulfill"}]},
                "description": "Call the patient about the cardiology referral"}
    if rtype == "Appointment":
        return {"resourceType": "Appointment", "status": "booked", "start": stamp,
                "end": (when + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:00Z"),
                "participant": [{"actor": ref("Patient", patient), "status": "accepted"},
                                {"actor": ref("Practitioner", practitioner),
                                 "status": "accepted"}]}
    if rtype == "Communication":
        return {"resourceType": "Communication", "status": "completed", "sent": stamp,
                "subject": ref("Patient", patient),
                "recipient": [ref("Practitioner", practitioner)],
                "sender": ref("Patient", patient),
                "payload": [{"contentString": "Please call me back about my results"}]}
    if rtype == "CarePlan":
        return {"resourceType": "CarePlan", "status": rng.choice(["active", "completed"]),
                "intent": "plan", "subject": ref("Patient", patient),
                "careTeam": [{"reference": f"CareTeam/team{patient}"}],
                "period": {"start": stamp}}
    return {"resourceType": "CareTeam", "status": "active", "subject": ref("Patient", patient),
            "participant": [{"member": ref("Practitioner", practitioner)}]}


def document(engine: SearchEngine, resource: dict[str, Any], rid: str, ts: datetime) -> dict[
        str, Any]:
    stamp_meta(resource, rid, 1, ts)
    sp = engine.index_fields(resource["resourceType"], resource)
    doc = {"_id": rid, "v": 1, "ts": ts, "del": False, "res": orjson.dumps(resource), "sp": sp}
    compartments = engine.compartments(resource["resourceType"], resource, sp)
    if compartments:
        doc["compartments"] = compartments
    return doc


def load(uri: str, engine: SearchEngine, start: int, stop: int, rng: random.Random,
         types: list[str] | None = None, db_pid: int = 0) -> float:
    """Inserts resources number start..stop-1 (by the MIX, or only `types` of it), returns
    seconds taken.

    The fast path: the next batch is built while the database stores the one before (one
    insert in flight on its own thread; building a document costs ~0.12 ms of Python, storing
    it ~0.7 ms of database CPU with the worklist indexes), in batches of BATCH. Building the
    indexes after the load instead was measured 10x slower on SecantusDB 0.7 (16 s of database
    CPU for 8,000 Tasks against 5.6 s inserting into an indexed collection), so the indexes
    exist from the start."""
    db = MongoClient(uri, tz_aware=True)["bench"]
    began = time.perf_counter()
    cpu_before = cpu_seconds([db_pid]) if db_pid else 0.0
    pool = ThreadPoolExecutor(1)
    pending: list[Future[None]] = []

    def flush(collection: Any, docs: list[dict[str, Any]]) -> None:
        pending.append(pool.submit(insert, collection, docs))
        while len(pending) > 1:  # at most one batch waiting behind the one being stored
            pending.pop(0).result()

    batches: dict[str, list[dict[str, Any]]] = {}
    if start == 0:
        batches["Patient"] = [document(engine, {
            "resourceType": "Patient", "name": [{"family": f"Family{i}", "given": ["Pat"]}],
            "identifier": [{"system": "http://mrn", "value": f"M{i}"}]}, f"p{i}",
            EPOCH) for i in range(PATIENTS)]
        batches["Practitioner"] = [document(engine, {
            "resourceType": "Practitioner", "name": [{"family": f"Doc{i}"}],
            "identifier": [{"system": "http://npi", "value": f"N{i}"}]}, f"pr{i}", EPOCH)
            for i in range(PRACTITIONERS)]
        batches["CareTeam"] = [document(engine, {
            "resourceType": "CareTeam", "status": "active", "subject": ref("Patient", i),
            "participant": [{"member": ref("Practitioner", i % PRACTITIONERS)}]},
            f"team{i}", EPOCH) for i in range(PATIENTS)]
    mix = [(t, w) for t, w in MIX if not types or t in types]
    weights = [w for _, w in mix]
    noted: set[tuple[str, str, datetime]] = set()
    splitters: dict[tuple[str, str, Any], int] = {}
    value_fields = index_value_fields(engine)
    for n in range(start, stop):
        rtype = rng.choices([t for t, _ in mix], weights)[0] if len(mix) > 1 else mix[0][0]
        ts = EPOCH + timedelta(seconds=n * 3)
        doc = document(engine, make(rtype, n, rng), f"r{n}", ts)
        batches.setdefault(rtype, []).append(doc)
        for field in bucketed_fields(rtype):
            noted.update((rtype, field, bucket_of(v)) for v in sort_buckets.values_of(doc, field))
        if value_fields.get(rtype) and sort_values.sampled(doc["_id"]):
            for field in value_fields[rtype]:
                for value in sort_values.notable(values_at(doc, field)):
                    splitters[(rtype, field, value)] = splitters.get((rtype, field, value), 0) + 1
        if len(batches[rtype]) >= BATCH:
            flush(db[rtype], batches.pop(rtype))
        if n % 100_000 == 99_999:
            spent = time.perf_counter() - began
            print(f"  loaded {n + 1 - start:,} in {spent:.0f} s", flush=True)
    for rtype, docs in batches.items():
        flush(db[rtype], docs)
    for future in pending:
        future.result()
    pool.shutdown()
    if db_pid:
        per_doc = (cpu_seconds([db_pid]) - cpu_before) / max(1, stop - start) * 1000
        print(f"  database CPU per stored resource {per_doc:.2f} ms")
    # The loader bypasses the write pipeline: note the sort-key buckets its writes would have,
    # and the splitters of the sampled resources (storage.sort_values).
    db[sort_buckets.SORT_BUCKETS].bulk_write(
        [sort_buckets.bucket_update(t, f, d) for t, f, d in sorted(noted)], ordered=False)
    if splitters:
        db[sort_values.SORT_VALUES].bulk_write(
            [sort_values.value_update(t, f, v, n * sort_values.SAMPLE)
             for (t, f, v), n in splitters.items()], ordered=False)
    db.client.close()
    return time.perf_counter() - began


def index_value_fields(engine: SearchEngine) -> dict[str, tuple[str, ...]]:
    """The string, token and number sort keys the indexes seek (search.valueseek)."""
    return valueseek.index_fields({t: [list(m.document["key"].items()) for m in models]
                                   for t, models in engine.index_models().items()})


TYPES = [t for t, _ in MIX] + ["Patient", "Practitioner"]


async def note_buckets(uri: str, engine: SearchEngine) -> None:
    """Notes both sort-key directories from what is stored (one read of each collection
    for each)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    await sort_buckets.rebuild(client["bench"], TYPES)
    await client.close()
    await note_values(uri, engine)


async def note_values(uri: str, engine: SearchEngine, loaded: int = 0) -> None:
    """Notes the splitter directory (storage.sort_values) from what is stored: a read of
    each collection, or, given how many resources this script `loaded`, only the sampled
    ones among its ids (`r0`..., `p0`..., `pr0`...: what their writes would have noted),
    read by `_id` (a 1M-Task collection is not scanned)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    fields = {t: f for t, f in index_value_fields(engine).items() if t in TYPES}
    if not loaded:
        await sort_values.rebuild(client["bench"], fields)
        await client.close()
        return
    ids = [i for i in (*(f"r{n}" for n in range(loaded)), *(f"p{n}" for n in range(PATIENTS)),
                       *(f"pr{n}" for n in range(PRACTITIONERS))) if sort_values.sampled(i)]
    counts: dict[tuple[str, str, Any], int] = {}
    for rtype, names in fields.items():
        for at in range(0, len(ids), 1000):
            async for doc in client["bench"][rtype].find(
                    {"_id": {"$in": ids[at: at + 1000]}, "del": False}, dict.fromkeys(names, 1)):
                for name in names:
                    for value in sort_values.notable(values_at(doc, name)):
                        counts[(rtype, name, value)] = counts.get((rtype, name, value), 0) + 1
    values = client["bench"][sort_values.SORT_VALUES]
    await values.delete_many({"t": {"$in": list(fields)}})
    if counts:
        await values.bulk_write([sort_values.value_update(t, f, v, n * sort_values.SAMPLE)
                                 for (t, f, v), n in counts.items()], ordered=False)
    await client.close()




def insert(collection: Any, docs: list[dict[str, Any]]) -> None:
    """insert_many that resumes an interrupted load: documents already there are skipped."""
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
            raise


def worklists(rng: random.Random) -> dict[str, Callable[[], str]]:
    def pr() -> str:
        return f"Practitioner/pr{rng.randrange(PRACTITIONERS)}"

    return {
        "Task status=requested, _count=10": lambda: "/Task?status=requested&_count=10",
        "Task owner+status, -_lastUpdated": lambda: (
            f"/Task?owner={pr()}&status=requested,in-progress&_sort=-_lastUpdated"),
        "Appointment actor, January": lambda: (
            f"/Appointment?actor={pr()}&date=ge2026-01-01&date=lt2026-02-01"),
        "CarePlan patient+active+_include": lambda: (
            f"/CarePlan?patient=Patient/p{rng.randrange(PATIENTS)}&status=active"
            "&_include=CarePlan:care-team"),
        "Communication recipient, -sent": lambda: (
            f"/Communication?recipient={pr()}&_sort=-sent&_count=20"),
        "Task patient.identifier (chain)": lambda: (
            "/Task?patient.identifier=" + quote(f"http://mrn|M{rng.randrange(PATIENTS)}")),
        # Sorts on a token (search.valueseek): the whole type, and one owner's.
        "Task _sort=status, _count=10": lambda: "/Task?_sort=status&_count=10",
        "Task owner, _sort=-status": lambda: f"/Task?owner={pr()}&_sort=-status&_count=10",
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes used so far (Linux /proc; children included
    for worker processes)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def bench_http(servers: dict[str, tuple[str, list[int]]], clients: int, seconds: float,
                     ids: list[str], rng: random.Random, repetitions: int = 2,
                     only: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Every worklist against every server (same database), interleaved: for each query,
    repetition after repetition, each server in turn; p50/p99 over all repetitions, and the
    CPU (server + database, from /proc) per request."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    out: dict[str, dict[str, dict[str, float]]] = {}
    queries: dict[str, Callable[[], str]] = {
        "GET /Task/{id} (baseline)": lambda: f"/Task/{ids[rng.randrange(len(ids))]}",
        **worklists(rng)}
    for name, url in queries.items():
        if only and not any(part in name for part in only.split(",")):
            continue
        samples: dict[str, list[float]] = {label: [] for label in servers}
        cpu: dict[str, float] = dict.fromkeys(servers, 0.0)
        # A page that outlasts the server's database time-out is answered 503 (transient):
        # counted, not fatal, since that is what seek off does at 300k Tasks.
        failed: dict[str, list[int]] = {label: [] for label in servers}
        for _ in range(repetitions):
            for label, (base, pids) in servers.items():
                async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
                    async def search(n: int, i: int, http: Any = http,
                                     url: Callable[[], str] = url,
                                     failed: list[int] = failed[label]) -> None:
                        r = await http.get(url())
                        if r.status_code == 503:
                            failed.append(1)
                            return
                        assert r.status_code == 200, r.text

                    before = cpu_seconds(pids)
                    latencies, _ = await run_clients(clients, seconds, search)
                    cpu[label] += cpu_seconds(pids) - before
                    samples[label] += latencies
        out[name] = {}
        for label, latencies in samples.items():
            row = report(f"{name} [{label}]", latencies, seconds * repetitions)
            row["cpu_ms"] = cpu[label] / max(1, len(latencies)) * 1000
            print(f"{'':<34} CPU per request (server + database) {row['cpu_ms']:.1f} ms")
            if failed[label]:
                print(f"{'':<34} {len(failed[label])} of {len(latencies)} answered 503: the "
                      "database time-out (their latency is the time to the 503)")
            out[name][label] = row
        labels = list(servers)
        if len(labels) == 2:
            a, b = (out[name][x] for x in labels)
            print(f"{'':<34} {labels[1]} / {labels[0]}: p50 {b['p50'] / a['p50']:.2f}x  "
                  f"p99 {b['p99'] / a['p99']:.2f}x  CPU {b['cpu_ms'] / max(a['cpu_ms'], 1e-9):.2f}x")
    return out


async def bench_driver(uri: str, clients: int, seconds: float, engine: SearchEngine,
                       rng: random.Random) -> dict[str, float]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, maxPoolSize=clients)
    tasks = client["bench"]["Task"]

    async def find(n: int, i: int) -> None:
        query = engine.parse("Task", [("owner", f"Practitioner/pr{rng.randrange(PRACTITIONERS)}"),
                                      ("status", "requested,in-progress")])
        await tasks.find(query.filter, {"sp": 0}).sort([("ts", -1), ("_id", -1)]).limit(
            51).to_list()

    result = report("driver: Task owner+status filter", *await run_clients(clients, seconds, find))
    await client.close()
    return result


def explain(uri: str, engine: SearchEngine) -> None:
    db = MongoClient(uri, tz_aware=True)["bench"]
    cases = [
        ("Task", [("owner", "Practitioner/pr1"), ("status", "requested,in-progress")]),
        ("Appointment", [("actor", "Practitioner/pr1"), ("date", "ge2026-01-01"),
                         ("date", "lt2026-02-01")]),
        ("CarePlan", [("patient", "Patient/p1"), ("status", "active")]),
        ("Communication", [("recipient", "Practitioner/pr1")]),
        ("Patient", [("identifier", "http://mrn|M1")]),
        ("Task", [("patient", "Patient/p1,Patient/p2")]),
    ]
    for rtype, params in cases:
        flt = engine.parse(rtype, params).filter
        plan = db[rtype].find(flt).explain()["queryPlanner"]["winningPlan"]
        stages = []
        while plan:
            stages.append(plan.get("stage", "?") + (f"({plan['indexName']})"
                                                    if "indexName" in plan else ""))
            plan = plan.get("inputStage")
        t0 = time.perf_counter()
        n = len(list(db[rtype].find(flt, {"_id": 1})))
        ms = (time.perf_counter() - t0) * 1000
        # The same filter forced onto a collection scan: what "no index" would cost.
        t0 = time.perf_counter()
        list(db[rtype].find(flt, {"_id": 1}).hint([("$natural", 1)]))
        scan = (time.perf_counter() - t0) * 1000
        print(f"  explain {rtype}?{'&'.join(f'{k}={v}' for k, v in params):<62} "
              f"{' <- '.join(stages):<40} {n:>5} docs {ms:7.1f} ms (forced scan {scan:6.0f} ms)")
    db.client.close()


def deep_pages(base: str) -> None:
    """Latency of page k (keyset cursor) for one practitioner's Task worklist, _count=1."""
    with httpx.Client(base_url=base, timeout=60) as http:
        url: str | None = "/Task?owner=Practitioner/pr7&_sort=-_lastUpdated&_count=1"
        timings: dict[int, float] = {}
        page = 0
        while url and page < 500:
            page += 1
            samples = []
            for _ in range(3 if page in (1, 10, 50, 100, 250, 500) else 1):
                t0 = time.perf_counter()
                r = http.get(url)
                samples.append(time.perf_counter() - t0)
            timings[page] = min(samples)
            url = next((link["url"] for link in r.json().get("link", [])
                        if link["relation"] == "next"), None)
            if url:
                url = url.split("/fhir", 1)[1]
        shown = [p for p in (1, 10, 50, 100, 250, page) if p in timings]
        print("  page cost (ms): " + "  ".join(f"p{p}={timings[p] * 1000:.1f}" for p in shown)
              + f"  ({page} pages of 1)")


def start_server(uri: str, port: int, log: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    from bench.servers import serve

    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": "bench", "FHIR_AUTH_DISABLED": "1",
           **env_extra}
    return serve(env, port, log)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--data-dir", default=None, help="keep the database here (default: tmp)")
    parser.add_argument("--loaded", type=int, default=0,
                        help="resources already in --data-dir from an earlier run (not reloaded)")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--no-explain", action="store_true",
                        help="skip the planner report (its forced scans take minutes at 1M)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 20,000 resources, 4 clients, 3 s per measurement")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--no-deep-pages", action="store_true")
    parser.add_argument("--rebuild-buckets", action="store_true",
                        help="note the buckets from the stored documents before measuring")
    parser.add_argument("--types", help="load only these types of the mix (comma-separated),"
                        " e.g. Task: --sizes 1000000 --types Task is 1M Tasks")
    parser.add_argument("--only", help="only the queries whose name holds one of these (comma-separated)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.clients, args.seconds, args.no_explain = "20000", 4, 2.0, True
        args.repetitions = 1
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"cores: {os.cpu_count()}  clients: {args.clients}  seconds per measurement: "
          f"{args.seconds}")
    port = args.port
    base = f"http://127.0.0.1:{port}/fhir"
    engine = SearchEngine(Settings(base_url=base))
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(
            Path(args.data_dir or tmp)) as db:
        server = start_server(db.uri, port, Path(args.data_dir or tmp) / "server.log")
        # The same-run baseline: the same code and database with seek pagination off.
        baseline = start_server(db.uri, port + 1, Path(args.data_dir or tmp) / "server0.log",
                                FHIR_SEARCH_SEEK="0")
        db_pid = db._process.pid if db._process else 0
        servers = {"seek off": (f"http://127.0.0.1:{port + 1}/fhir", [baseline.pid, db_pid]),
                   "seek": (base, [server.pid, db_pid])}
        try:
            for address, _ in servers.values():
                wait_ready(address, 600)  # the servers have created the collections and indexes
            loaded = args.loaded
            for size in sizes:
                seconds = load(db.uri, engine, loaded, size, rng,
                               args.types.split(",") if args.types else None,
                               db_pid) if size > loaded else 0.0
                print(f"\n== {size:,} coordination resources (+{PATIENTS:,} patients, "
                      f"{PRACTITIONERS} practitioners, {PATIENTS:,} care teams); loaded "
                      f"{size - loaded:,} in {seconds:.0f} s ==")
                if args.rebuild_buckets or not seconds:
                    # A database loaded by an earlier version of this script: note the
                    # buckets from what is stored (idempotent; one read of each collection).
                    t0 = time.perf_counter()
                    asyncio.run(note_buckets(db.uri, engine))
                    print(f"  sort-key buckets noted in {time.perf_counter() - t0:.1f} s")
                loaded = size
                print("  load average before measuring (other work on the machine): "
                      + " ".join(f"{x:.1f}" for x in os.getloadavg()))
                if not args.no_explain:
                    explain(db.uri, engine)
                if not args.no_deep_pages:
                    deep_pages(base)
                    deep_pages(servers["seek off"][0])
                ids = [f"p{i}" for i in range(100)]
                with MongoClient(db.uri)["bench"]["Task"].find({}, {"_id": 1}).limit(
                        200) as cursor:
                    ids = [d["_id"] for d in cursor]
                asyncio.run(bench_driver(db.uri, args.clients, args.seconds, engine, rng))
                # Warm-up: each server reads the bucket directory once.
                for url in worklists(rng).values():
                    for address, _ in servers.values():
                        httpx.get(address + url(), timeout=600)
                asyncio.run(bench_http(servers, args.clients, args.seconds, ids, rng,
                                       args.repetitions, args.only))
                print("  load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
        finally:
            for process in (server, baseline):
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()
