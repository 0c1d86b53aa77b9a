"""Transaction and bulk-load benchmark (issue: batch/transaction, loading).

1. A 100-entry transaction (one patient's referral: Patient, CarePlan, CareTeam, Tasks,
   Communications, DocumentReferences, Appointments, with urn:uuid references) POSTed to a
   running server: median / p99 latency; beside it, the raw driver writing the same number of
   current+history documents in one transaction (the floor).
2. A batch of N independent entries beside a transaction of the same N entries (same run,
   interleaved): seconds each and the batch/transaction ratio (target: batch <= 3x).
3. `fhir-server load` of N generated resources (NDJSON, over 5,000 patients): resources/s;
   beside it, raw insert_many of the same number of documents.

    .venv/bin/python bench/bundles.py [--transactions 30] [--resources 100000] [--batch-entries 1000]
    .venv/bin/python bench/bundles.py --only batch --batch-entries 1000 --batch-rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import start_server, wait_up
from fhir_server.embedded_db import EmbeddedDatabase


def referral(n_entries: int = 100) -> dict[str, Any]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    team = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {"fullUrl": patient, "resource": {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jane"]}],
                                          "identifier": [{"system": "urn:mrn", "value": uuid.uuid4().hex}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": team, "resource": {"resourceType": "CareTeam", "status": "active",
                                       "subject": {"reference": patient}},
         "request": {"method": "POST", "url": "CareTeam"}},
        {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                      "subject": {"reference": patient}, "careTeam": [{"reference": team}]},
         "request": {"method": "POST", "url": "CarePlan"}},
    ]
    kinds = ["Task", "Communication", "DocumentReference", "Appointment"]
    while len(entries) < n_entries:
        kind = kinds[len(entries) % 4]
        if kind == "Task":
            res = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": patient},
                   "description": "Follow up on the cardiology referral"}
        elif kind == "Communication":
            res = {"resourceType": "Communication", "status": "completed", "subject": {"reference": patient},
                   "payload": [{"contentString": "Referral letter attached"}]}
        elif kind == "DocumentReference":
            res = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": patient},
                   "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}
        else:
            res = {"resourceType": "Appointment", "status": "booked",
                   "participant": [{"actor": {"reference": patient}, "status": "accepted"}]}
        entries.append({"resource": res, "request": {"method": "POST", "url": kind}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def flat_entries(n_entries: int, patient: str) -> list[dict[str, Any]]:
    """N creates with no references between them (a batch has no interdependencies)."""
    kinds = ["Task", "Communication", "DocumentReference", "Appointment"]
    entries = []
    for n in range(n_entries):
        kind = kinds[n % 4]
        if kind == "Task":
            res: dict[str, Any] = {"resourceType": "Task", "status": "requested", "intent": "order",
                                   "for": {"reference": patient}, "description": f"Follow up {n}"}
        elif kind == "Communication":
            res = {"resourceType": "Communication", "status": "completed", "subject": {"reference": patient},
                   "payload": [{"contentString": "Referral letter attached"}]}
        elif kind == "DocumentReference":
            res = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": patient},
                   "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}
        else:
            res = {"resourceType": "Appointment", "status": "booked",
                   "participant": [{"actor": {"reference": patient}, "status": "accepted"}]}
        entries.append({"resource": res, "request": {"method": "POST", "url": kind}})
    return entries


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_batch(bases: dict[str, str], pids: dict[str, int], db_pid: int, n_entries: int, rounds: int) -> None:
    """A transaction and batches of the same entries (one server per batch concurrency, same
    database), interleaved: wall seconds, and CPU seconds of the server and the database."""
    runs = [("transaction", "batch"), *((f"batch c={c}", c) for c in bases if c != "transaction")]
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in runs}
    with httpx.Client(timeout=900) as http:
        patient = http.post(f"{bases['8']}/Patient", json={"resourceType": "Patient"}).json()["id"]
        for _ in range(rounds):
            for name, which in runs:
                server = "8" if name == "transaction" else str(which)
                kind = "transaction" if name == "transaction" else "batch"
                body = orjson.dumps({"resourceType": "Bundle", "type": kind,
                                     "entry": flat_entries(n_entries, f"Patient/{patient}")})
                cpu0, db0, t0 = _cpu_seconds(pids[server]), _cpu_seconds(db_pid), time.perf_counter()
                r = http.post(bases[server], content=body, headers={"content-type": "application/fhir+json",
                                                                    "prefer": "return=minimal"})
                wall = time.perf_counter() - t0
                times[name].append((wall, _cpu_seconds(pids[server]) - cpu0, _cpu_seconds(db_pid) - db0))
                assert r.status_code == 200, r.text[:500]
                statuses = {e["response"]["status"] for e in r.json()["entry"]}
                assert statuses == {"201 Created"}, statuses
    medians = {name: [statistics.median(x[i] for x in values) for i in range(3)] for name, values in times.items()}
    for name, (wall, cpu, db) in medians.items():
        print(f"{n_entries}-entry {name:<12} median {wall:7.2f} s wall   server CPU {cpu:6.2f} s   database CPU "
              f"{db:6.2f} s   walls {[round(t[0], 2) for t in times[name]]}")
    for name in medians:
        if name != "transaction":
            print(f"{name} / transaction: wall {medians[name][0] / medians['transaction'][0]:.2f}x   CPU "
                  f"{sum(medians[name][1:]) / sum(medians['transaction'][1:]):.2f}x (target: wall <= 3x)")


def stats(name: str, values: list[float], unit: str = "ms") -> None:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<44} median {statistics.median(values):8.1f} {unit}   p99 {p99:8.1f} {unit}   n={len(values)}")


async def raw_transactions(uri: str, runs: int) -> list[float]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client["bench_raw"]
    times = []
    for _ in range(runs):
        docs = [{"_id": uuid.uuid4().hex, "v": 1, "res": b"x" * 400} for _ in range(100)]
        t0 = time.perf_counter()
        async with client.start_session() as s, await s.start_transaction():
            await db.cur.insert_many(docs, session=s)
            await db.hist.insert_many([{**d, "_id": d["_id"] + "/1"} for d in docs], session=s)
        times.append((time.perf_counter() - t0) * 1000)
    await client.drop_database("bench_raw")
    await client.close()
    return times


def bench_transactions(base: str, runs: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(runs):
            body = orjson.dumps(referral())
            t0 = time.perf_counter()
            r = http.post("", content=body, headers={"content-type": "application/fhir+json",
                                                      "prefer": "return=minimal"})
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text[:500]
    return times


def generate(folder: Path, count: int, patients: int = 5000) -> Path:
    path = folder / "resources.ndjson"
    rnd = random.Random(7)
    with path.open("wb") as out:
        for n in range(count):
            p = f"Patient/p{rnd.randrange(patients)}"
            owner = f"Practitioner/dr{rnd.randrange(200)}"
            kind = n % 4
            if kind == 0:
                res: dict[str, Any] = {"resourceType": "Task", "id": f"t{n}", "status": rnd.choice(["requested", "in-progress", "completed"]),
                                       "intent": "order", "for": {"reference": p}, "owner": {"reference": owner},
                                       "authoredOn": f"2026-0{1 + n % 9}-1{n % 10}T10:00:00Z"}
            elif kind == 1:
                res = {"resourceType": "Appointment", "id": f"a{n}", "status": "booked",
                       "start": f"2026-0{1 + n % 9}-1{n % 10}T09:00:00Z", "end": f"2026-0{1 + n % 9}-1{n % 10}T09:30:00Z",
                       "participant": [{"actor": {"reference": p}, "status": "accepted"},
                                       {"actor": {"reference": owner}, "status": "accepted"}]}
            elif kind == 2:
                res = {"resourceType": "CarePlan", "id": f"c{n}", "status": "active", "intent": "plan",
                       "subject": {"reference": p}}
            else:
                res = {"resourceType": "Communication", "id": f"m{n}", "status": "completed",
                       "subject": {"reference": p}, "recipient": [{"reference": owner}],
                       "sent": f"2026-0{1 + n % 9}-1{n % 10}T08:00:00Z", "payload": [{"contentString": "hello"}]}
            out.write(orjson.dumps(res) + b"\n")
    return path


async def raw_load(uri: str, count: int) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client["bench_raw"]
    t0 = time.perf_counter()
    for start in range(0, count, 500):
        docs = [{"_id": f"x{n}", "v": 1, "res": b"x" * 300} for n in range(start, min(count, start + 500))]
        async with client.start_session() as s, await s.start_transaction():
            await db.cur.insert_many(docs, session=s)
            await db.hist.insert_many([{**d, "_id": d["_id"] + "/1"} for d in docs], session=s)
    rate = count / (time.perf_counter() - t0)
    await client.drop_database("bench_raw")
    await client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=30)
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--batch-entries", type=int, default=1000)
    parser.add_argument("--batch-rounds", type=int, default=3)
    parser.add_argument("--only", choices=["batch"], help="run only the batch vs transaction comparison")
    parser.add_argument("--batch-concurrency", default="32,32:alone,8",
                        help="FHIR_BATCH_CONCURRENCY of each batch server compared (1 = one entry at a "
                             "time); ':alone' = without group commit (FHIR_BATCH_GROUP_COMMIT=0)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        port = 18081
        base = f"http://127.0.0.1:{port}/fhir"
        levels = [c.strip() for c in args.batch_concurrency.split(",")]
        levels = ["8", *[c for c in levels if c != "8"]]
        servers = {}
        for n, level in enumerate(levels):
            os.environ["FHIR_BATCH_CONCURRENCY"] = level.split(":")[0]
            os.environ["FHIR_BATCH_GROUP_COMMIT"] = "0" if level.endswith(":alone") else "1"
            servers[level] = (start_server(db.uri, port + n), f"http://127.0.0.1:{port + n}/fhir")
        try:
            for _, url in servers.values():
                wait_up(url)
            if args.only != "batch":
                bench_transactions(base, 3)  # warm-up
                stats("server: 100-entry transaction", bench_transactions(base, args.transactions))
            db_pid = db._process.pid if db._process else 0
            bench_batch({level: url for level, (_, url) in servers.items()},
                        {level: proc.pid for level, (proc, _) in servers.items()}, db_pid,
                        args.batch_entries, args.batch_rounds)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
        if args.only == "batch":
            return
        stats("driver: 100+100 documents in one transaction", asyncio.run(raw_transactions(db.uri, args.transactions)))
        source = generate(Path(tmp), args.resources)
        env = {**os.environ, "MONGODB_URI": db.uri, "FHIR_DATABASE": "bench_load", "FHIR_AUTH_DISABLED": "1"}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "fhir_server", "load", str(source)], env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        print(done.stderr.strip().splitlines()[-1])
        print(f"{'fhir-server load (validated, indexed)':<44} {args.resources / seconds:8.0f} resources/s "
              f"({args.resources} in {seconds:.1f}s, process start included)")
        print(f"{'driver: insert_many current+history':<44} {asyncio.run(raw_load(db.uri, args.resources)):8.0f} documents/s")


if __name__ == "__main__":
    main()
