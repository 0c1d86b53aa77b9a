"""Scheduling benchmark: `$find` over a month of 15-minute Slots, and 16 clients racing `$book`,
each beside a same-run baseline.

Starts the embedded database and `fhir-server serve` (with the shipped workflows) as separate
processes, loads P practitioners, each with a Schedule and one month of 15-minute Slots in
working hours (8 h a day, 30 days: 960 Slots each; 48,000 for 50) straight into the database
with `insert_many`, each document built by the server's own write-path code (`stamp_meta`,
`SearchEngine.index_fields`, the sort-key buckets), as bench/search.py does: through HTTP the
month did not finish loading on a loaded machine. Then:

1. `$find`, four shapes, interleaved with the baseline (the plain Slot search a `$find` for
   one practitioner and day runs: `GET /Slot?schedule=…&status=free&start=ge…&start=lt…`):
   one practitioner × one day; one practitioner × the month (first 20 proposals); every
   practitioner × one day (first 20); every practitioner × the month (first 20: the issue's
   shape, target p99 < 200 ms). p50/p99 latency, and the ratio to the baseline's p50;
2. booked → session: a virtual visit `$book`ed, then polled (every POLL s) until the engine has
   recorded its room (the virtualService address) and committed its four preparation Tasks.
   p50/p99 of each. Baseline, interleaved: a plain create polled the same way until a search
   finds it (what the polling itself costs);
3. the race: a Schedule with S Slots (1,000); 16 clients each `$book` every Slot in its own
   random order (16,000 attempts, S can succeed). Throughput of attempts and of bookings,
   answers counted (200 / 409 / other), then **double bookings counted**: every booked
   Appointment read back, each Slot must be named by exactly one. Baseline: the same 16
   clients creating plain Appointments (`POST /Appointment`, no Slot checked). The shipped
   workflows run meanwhile (each booking's preparation Tasks), as they would in service.

CPU time of the server and database processes (from /proc) per request is printed beside
wall time, and the load average beside each table.

    .venv/bin/python bench/scheduling.py --quick     # 10 practitioners × 7 days, 200 Slots
    .venv/bin/python bench/scheduling.py             # 50 practitioners × 30 days, 1,000 Slots
    .venv/bin/python bench/scheduling.py --baseline-tree DIR   # $find beside an older tree (git archive)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import wait_ready
from fhir_server.config import Settings
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.search import SearchEngine
from fhir_server.search.seek import bucket_of, bucketed_fields
from fhir_server.storage import sort_buckets
from fhir_server.storage.documents import stamp_meta
from telehealth.virtual_service import URL as VIRTUAL_SERVICE
from telehealth.virtual_service import read as read_service

Doc = dict[str, Any]
START = datetime(2031, 3, 1, tzinfo=UTC)
DATABASE = "bench_sched"
POLL = 0.01
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


PIDS: list[int] = []  # the server's and the database's processes (CPU is theirs together)


def cpu_of(_pid: int = 0, pids: list[int] | None = None) -> float:
    total = 0.0
    for pid in PIDS if pids is None else pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load_average() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def start_server(uri: str, port: int, tree: Path | None = None) -> subprocess.Popen[bytes]:
    """`serve` from this tree, or from `tree` (an older commit's, for a same-run baseline)."""
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": DATABASE, "FHIR_AUTH_DISABLED": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port




def transaction(resources: list[Doc]) -> Doc:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{r.pop('_uuid')}", "resource": r,
         "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def document(engine: SearchEngine, resource: Doc, ts: datetime) -> Doc:
    """The stored document the write pipeline would make of `resource` (version 1)."""
    stamp_meta(resource, resource["id"], 1, ts)
    sp = engine.index_fields(resource["resourceType"], resource)
    doc: Doc = {"_id": resource["id"], "v": 1, "ts": ts, "del": False, "res": orjson.dumps(resource), "sp": sp}
    compartments = engine.compartments(resource["resourceType"], resource, sp)
    if compartments:
        doc["compartments"] = compartments
    return doc


def load(uri: str, base: str, practitioners: int, days: int) -> list[tuple[str, str]]:
    """P practitioners with Schedules and Slots, inserted as the write pipeline stores them;
    answers (practitioner, schedule) ids. Only current collections (search reads no history)."""
    engine = SearchEngine(Settings(base_url=base))
    db = MongoClient(uri, tz_aware=True)[DATABASE]
    out: list[tuple[str, str]] = []
    batches: dict[str, list[Doc]] = {"Practitioner": [], "Schedule": [], "Slot": []}
    noted: set[tuple[str, str, datetime]] = set()
    rng = random.Random(7)

    def add(resource: Doc) -> None:
        rtype = resource["resourceType"]
        doc = document(engine, resource, EPOCH)
        for field in bucketed_fields(rtype):
            noted.update((rtype, field, bucket_of(v)) for v in sort_buckets.values_of(doc, field))
        batches[rtype].append(doc)
        if len(batches[rtype]) >= 2000:
            db[rtype].insert_many(batches[rtype], ordered=False)
            batches[rtype] = []

    for n in range(practitioners):
        pid, sid = f"bench-dr-{n}", f"bench-sched-{n}"
        out.append((pid, sid))
        add({"resourceType": "Practitioner", "id": pid, "name": [{"family": f"D{n}"}]})
        add({"resourceType": "Schedule", "id": sid, "active": True, "actor": [{"reference": f"Practitioner/{pid}"}]})
        for day in range(days):
            for quarter in range(32):  # 08:00-16:00
                at = START + timedelta(days=day, hours=8, minutes=15 * quarter)
                add({"resourceType": "Slot", "id": f"s{n}-{day}-{quarter}", "schedule": {"reference": f"Schedule/{sid}"},
                     "status": "free" if rng.random() < 0.7 else "busy",
                     "start": iso(at), "end": iso(at + timedelta(minutes=15))})
    for rtype, docs in batches.items():
        if docs:
            db[rtype].insert_many(docs, ordered=False)
    if noted:  # what the write pipeline notes for sorted searches (storage.sort_buckets)
        db[sort_buckets.SORT_BUCKETS].bulk_write(
            [sort_buckets.bucket_update(t, f, d) for t, f, d in sorted(noted)], ordered=False)
    db.client.close()
    return out


async def timed(client: httpx.AsyncClient, url: str, params: Any) -> float:
    begin = time.perf_counter()
    response = await client.get(url, params=params)
    elapsed = time.perf_counter() - begin
    assert response.status_code == 200, response.text[:300]
    return elapsed


async def bench_find(servers: dict[str, tuple[str, list[int]]], people: list[tuple[str, str]], days: int,
                     rounds: int) -> None:
    """Each shape on each server (this tree's, and the baseline tree's when given), interleaved."""
    names = ["baseline: Slot search, 1 practitioner × 1 day", "$find 1 practitioner × 1 day",
             "$find 1 practitioner × month (20)", f"$find all {len(people)} practitioners × 1 day (20)",
             f"$find all {len(people)} practitioners × month (20)"]
    shapes: dict[tuple[str, str], list[float]] = {(n, s): [] for n in names for s in servers}
    cpu: dict[tuple[str, str], float] = dict.fromkeys(shapes, 0.0)
    clients = {s: httpx.AsyncClient(base_url=base, timeout=120) for s, (base, _) in servers.items()}
    try:
        for _ in range(rounds):
            pid, sid = random.choice(people)
            day = START + timedelta(days=random.randrange(days))
            one_day = {"start": iso(day), "end": iso(day + timedelta(days=1))}
            month = {"start": iso(START), "end": iso(START + timedelta(days=days))}
            requests = [
                ("/Slot", [("schedule", f"Schedule/{sid}"), ("status", "free"), ("start", f"ge{one_day['start']}"),
                           ("start", f"lt{one_day['end']}"), ("_sort", "start"), ("_count", "20")]),
                ("/Appointment/$find", {**one_day, "practitioner": f"Practitioner/{pid}"}),
                ("/Appointment/$find", {**month, "practitioner": f"Practitioner/{pid}", "_count": "20"}),
                ("/Appointment/$find", {**one_day, "_count": "20"}),
                ("/Appointment/$find", {**month, "_count": "20"}),
            ]
            for name, (url, params) in zip(names, requests, strict=True):  # interleaved
                for server, (_, pids) in servers.items():
                    before = cpu_of(pids=pids)
                    shapes[(name, server)].append(await timed(clients[server], url, params))
                    cpu[(name, server)] += cpu_of(pids=pids) - before
    finally:
        for client in clients.values():
            await client.aclose()
    first = next(iter(servers))
    base50 = statistics.median(shapes[(names[0], first)])
    print(f"\n$find, {rounds} rounds interleaved ({load_average()}); CPU = server + database")
    print("\n| request | server | p50 | p99 | CPU / request | p50 ÷ baseline p50 |\n| --- | --- | --- | --- | --- | --- |")
    for (name, server), values in shapes.items():
        print(f"| {name} | {server} | {statistics.median(values) * 1000:.1f} ms "
              f"| {percentile(values, 0.99) * 1000:.1f} ms | {cpu[(name, server)] / len(values) * 1000:.1f} ms "
              f"| {statistics.median(values) / base50:.2f}× |")


async def until(client: httpx.AsyncClient, begin: float, checks: dict[str, Any], timeout: float = 120) -> dict[str, float]:
    """Polls each check (an async predicate) every POLL s; answers when each first held,
    in seconds after `begin`."""
    seen: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(seen) < len(checks):
        if time.perf_counter() > deadline:
            raise SystemExit(f"not within {timeout} s: {sorted(set(checks) - set(seen))}")
        for name, check in checks.items():
            if name not in seen and await check():
                seen[name] = time.perf_counter() - begin
        await asyncio.sleep(POLL)
    return seen


async def bench_booked(base: str, samples: int) -> None:
    """A virtual visit booked → its room recorded and its preparation Tasks committed."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as api:
        entries: list[Doc] = [
            {"_uuid": uuid.uuid4(), "resourceType": "Practitioner", "id": "visit-dr"},
            {"_uuid": uuid.uuid4(), "resourceType": "Patient", "id": "visit-patient"},
            {"_uuid": uuid.uuid4(), "resourceType": "Schedule", "id": "visits", "active": True,
             "actor": [{"reference": "Practitioner/visit-dr"}]}]
        times = [START + timedelta(days=90, minutes=30 * n) for n in range(samples)]
        entries += [{"_uuid": uuid.uuid4(), "resourceType": "Slot", "id": f"visit-{n}",
                     "schedule": {"reference": "Schedule/visits"}, "status": "free",
                     "start": iso(at), "end": iso(at + timedelta(minutes=30))} for n, at in enumerate(times)]
        assert (await api.post("", json=transaction(entries))).status_code == 200
        found: dict[str, list[float]] = {"baseline: plain create → found by search": [],
                                         "$book answered": [], "booked → room recorded": [],
                                         "booked → 4 preparation Tasks committed": [],
                                         "booked → both": []}
        for n, at in enumerate(times):
            plain = {**proposal(f"none-{n}", at, n), "status": "proposed"}
            plain.pop("slot")
            begin = time.perf_counter()
            made = (await api.post("/Appointment", json=plain)).json()["id"]

            async def visible(made: str = made) -> bool:
                page = (await api.get("/Appointment", params={"_id": made, "_summary": "count"})).json()
                return bool(page.get("total") == 1)

            found["baseline: plain create → found by search"].append((await until(api, begin, {"v": visible}))["v"])
            visit = proposal(f"visit-{n}", at, n)
            visit["participant"][0]["actor"]["reference"] = "Patient/visit-patient"
            visit["participant"][1]["actor"]["reference"] = "Practitioner/visit-dr"
            visit["extension"] = [{"url": VIRTUAL_SERVICE, "extension": [
                {"url": "maxParticipants", "valuePositiveInt": 4}]}]
            body = {"resourceType": "Parameters", "parameter": [{"name": "appointment-resource", "resource": visit}]}
            begin = time.perf_counter()
            booked = await api.post("/Appointment/$book", json=body)
            assert booked.status_code == 200, booked.text[:300]
            found["$book answered"].append(time.perf_counter() - begin)
            aid = next(e["resource"]["id"] for e in booked.json()["entry"])

            async def room(aid: str = aid) -> bool:
                service = read_service((await api.get(f"/Appointment/{aid}")).json())
                return service is not None and service.address is not None

            async def prepared(aid: str = aid) -> bool:
                page = (await api.get("/Task", params={"focus": f"Appointment/{aid}", "_summary": "count"})).json()
                return bool(page.get("total") == 4)

            seen = await until(api, begin, {"room": room, "prep": prepared})
            found["booked → room recorded"].append(seen["room"])
            found["booked → 4 preparation Tasks committed"].append(seen["prep"])
            found["booked → both"].append(max(seen.values()))
    print(f"\nbooked → session + preparation, {samples} visits one after another, polled every "
          f"{POLL * 1000:.0f} ms ({load_average()})")
    print("\n| from the request | p50 | p99 |\n| --- | --- | --- |")
    for name, values in found.items():
        print(f"| {name} | {statistics.median(values) * 1000:.0f} ms | {percentile(values, 0.99) * 1000:.0f} ms |")


def proposal(slot_id: str, at: datetime, n: int) -> Doc:
    return {"resourceType": "Appointment", "status": "proposed", "start": iso(at),
            "end": iso(at + timedelta(minutes=15)), "slot": [{"reference": f"Slot/{slot_id}"}],
            "participant": [{"actor": {"reference": f"Patient/racer-{n}"}, "status": "needs-action"},
                            {"actor": {"reference": "Practitioner/race-dr"}, "status": "needs-action"}]}


async def bench_race(base: str, slots: int, clients: int, server: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as api:
        entries = [{"_uuid": uuid.uuid4(), "resourceType": "Schedule", "id": "race", "active": True,
                    "actor": [{"reference": "Practitioner/race-dr"}]}]
        times = {}
        for n in range(slots):
            at = START + timedelta(days=60, minutes=15 * n)
            times[f"race-{n}"] = at
            entries.append({"_uuid": uuid.uuid4(), "resourceType": "Slot", "id": f"race-{n}",
                            "schedule": {"reference": "Schedule/race"}, "status": "free",
                            "start": iso(at), "end": iso(at + timedelta(minutes=15))})
        for i in range(0, len(entries), 1000):
            assert (await api.post("", json=transaction(entries[i:i + 1000]))).status_code == 200

    answers: dict[int, int] = {}

    async def racer(n: int) -> None:
        order = list(times)
        random.Random(n).shuffle(order)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for slot_id in order:
                body = {"resourceType": "Parameters", "parameter": [
                    {"name": "appointment-resource", "resource": proposal(slot_id, times[slot_id], n)}]}
                status = (await client.post("/Appointment/$book", json=body)).status_code
                answers[status] = answers.get(status, 0) + 1

    async def plain(n: int, count: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for k in range(count):
                appointment = {**proposal(f"none-{n}-{k}", START, n), "status": "booked"}
                appointment.pop("slot")
                assert (await client.post("/Appointment", json=appointment)).status_code == 201

    per_client = max(1, slots // clients * 4)
    before, begin = cpu_of(server), time.perf_counter()
    await asyncio.gather(*(plain(n, per_client) for n in range(clients)))
    plain_wall, plain_cpu = time.perf_counter() - begin, cpu_of(server) - before
    before, begin = cpu_of(server), time.perf_counter()
    await asyncio.gather(*(racer(n) for n in range(clients)))
    race_wall, race_cpu = time.perf_counter() - begin, cpu_of(server) - before
    attempts = sum(answers.values())

    named: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=120) as api:
        url: str | None = "/Appointment?status=booked&_count=1000&_elements=slot"
        while url:
            page = (await api.get(url)).json()
            for entry in page.get("entry", []):
                for ref in entry["resource"].get("slot", []):
                    named[ref["reference"]] = named.get(ref["reference"], 0) + 1
            url = next((link["url"].removeprefix(base) for link in page.get("link", [])
                        if link["relation"] == "next"), None)
        busy = 0
        for n in range(slots):
            busy += (await api.get(f"/Slot/race-{n}")).json()["status"] == "busy"
    raced = {k: v for k, v in named.items() if k.startswith("Slot/race-")}
    doubles = sum(1 for v in raced.values() if v > 1)
    plain_n = per_client * clients
    print(f"\n({load_average()}; CPU = server + database)")
    print(f"race: {clients} clients × {slots} Slots = {attempts} $book attempts in {race_wall:.1f} s: "
          f"{attempts / race_wall:.0f} attempts/s, {answers.get(200, 0) / race_wall:.1f} bookings/s; "
          f"answers {dict(sorted(answers.items()))}; server CPU {race_cpu / attempts * 1000:.1f} ms/attempt")
    print(f"baseline: {plain_n} plain POST /Appointment in {plain_wall:.1f} s: {plain_n / plain_wall:.0f}/s; "
          f"server CPU {plain_cpu / plain_n * 1000:.1f} ms/create")
    print(f"Slots booked: {len(raced)} of {slots} (busy: {busy}); **double bookings: {doubles}**")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--practitioners", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--visits", type=int, default=40, help="virtual visits booked one after another")
    parser.add_argument("--baseline-tree", type=Path,
                        help="another tree (e.g. `git archive cb2899a`) served beside this one for $find")
    parser.add_argument("--skip", default="", help="parts to leave out: find, booked, race (comma-separated)")
    args = parser.parse_args()
    practitioners = args.practitioners or (10 if args.quick else 50)
    days = args.days or (7 if args.quick else 30)
    slots = args.slots or (200 if args.quick else 1000)
    random.seed(20261201)
    print(f"cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}  practitioners: {practitioners}  "
          f"days: {days}  Slots: {practitioners * days * 32}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as db:
        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        server = start_server(db.uri, port)
        try:
            wait_ready(base, 300, process=server)
            PIDS[:] = [server.pid, *([db._process.pid] if db._process else [])]
            skip = set(args.skip.split(","))
            begin = time.perf_counter()
            people = load(db.uri, base, practitioners, days)
            print(f"loaded {practitioners * days * 32:,} Slots in {time.perf_counter() - begin:.0f} s")
            if "find" not in skip:
                servers = {"this tree": (base, PIDS[:])}
                if args.baseline_tree:
                    old_port = free_port()
                    old = start_server(db.uri, old_port, args.baseline_tree)
                    wait_ready(f"http://127.0.0.1:{old_port}/fhir", 300, process=old)
                    servers[f"baseline {args.baseline_tree.name}"] = (f"http://127.0.0.1:{old_port}/fhir",
                                                                      [old.pid, *PIDS[1:]])
                try:
                    asyncio.run(bench_find(servers, people, days, args.rounds))
                finally:
                    if args.baseline_tree:
                        old.terminate()
                        old.wait(30)
            if "booked" not in skip:
                asyncio.run(bench_booked(base, args.visits))
            if "race" not in skip:
                asyncio.run(bench_race(base, slots, args.clients, server.pid))
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
