"""Scheduling benchmark: `$find` over a month of 15-minute Slots, and 16 clients racing `$book`,
each beside a same-run baseline.

Starts the embedded database and `fhir-server serve` as separate processes, loads (by
transaction Bundles) P practitioners, each with a Schedule and one month of 15-minute Slots
in working hours (8 h a day, 30 days: 960 Slots each; 48,000 for 50), then:

1. `$find`, three shapes, interleaved with the baseline (the plain Slot search a `$find` for
   one practitioner and day runs: `GET /Slot?schedule=…&status=free&start=ge…&start=lt…`):
   one practitioner × one day; one practitioner × the month (first 20 proposals); every
   practitioner × one day (first 20). p50/p99 latency, and the ratio to the baseline's p50;
2. the race: a Schedule with S Slots (1,000); 16 clients each `$book` every Slot in its own
   random order (16,000 attempts, S can succeed). Throughput of attempts and of bookings,
   answers counted (200 / 409 / other), then **double bookings counted**: every booked
   Appointment read back, each Slot must be named by exactly one. Baseline: the same 16
   clients creating plain Appointments (`POST /Appointment`, no Slot checked).

CPU time of the server process (from /proc) per request is printed beside wall time.

    .venv/bin/python bench/scheduling.py --quick     # 10 practitioners × 7 days, 200 Slots
    .venv/bin/python bench/scheduling.py             # 50 practitioners × 30 days, 1,000 Slots
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fhir_server.embedded_db import EmbeddedDatabase

Doc = dict[str, Any]
START = datetime(2031, 3, 1, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(uri: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": "bench_sched", "FHIR_AUTH_DISABLED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_up(base: str) -> None:
    deadline = time.monotonic() + 300  # a loaded machine starts slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start")


def transaction(resources: list[Doc]) -> Doc:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{r.pop('_uuid')}", "resource": r,
         "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def load(api: httpx.Client, practitioners: int, days: int, batch: int = 1000) -> list[tuple[str, str]]:
    """P practitioners with Schedules and Slots; answers (practitioner, schedule) ids."""
    out: list[tuple[str, str]] = []
    pending: list[Doc] = []

    def flush() -> None:
        if pending:
            response = api.post("", json=transaction(pending))
            assert response.status_code == 200, response.text[:500]
            pending.clear()

    for n in range(practitioners):
        pid, sid = f"bench-dr-{n}", f"bench-sched-{n}"
        out.append((pid, sid))
        pending += [{"_uuid": uuid.uuid4(), "resourceType": "Practitioner", "id": pid, "name": [{"family": f"D{n}"}]},
                    {"_uuid": uuid.uuid4(), "resourceType": "Schedule", "id": sid, "active": True,
                     "actor": [{"reference": f"Practitioner/{pid}"}]}]
        for day in range(days):
            for quarter in range(32):  # 08:00-16:00
                at = START + timedelta(days=day, hours=8, minutes=15 * quarter)
                pending.append({"_uuid": uuid.uuid4(), "resourceType": "Slot", "id": f"s{n}-{day}-{quarter}",
                                "schedule": {"reference": f"Schedule/{sid}"},
                                "status": "free" if random.random() < 0.7 else "busy",
                                "start": iso(at), "end": iso(at + timedelta(minutes=15))})
                if len(pending) >= batch:
                    flush()
    flush()
    return out


async def timed(client: httpx.AsyncClient, url: str, params: Any) -> float:
    begin = time.perf_counter()
    response = await client.get(url, params=params)
    elapsed = time.perf_counter() - begin
    assert response.status_code == 200, response.text[:300]
    return elapsed


async def bench_find(base: str, people: list[tuple[str, str]], days: int, rounds: int, server: int) -> None:
    shapes: dict[str, list[float]] = {"baseline: Slot search, 1 practitioner × 1 day": [],
                                      "$find 1 practitioner × 1 day": [], "$find 1 practitioner × month (20)": [],
                                      f"$find all {len(people)} practitioners × 1 day (20)": []}
    cpu: dict[str, float] = dict.fromkeys(shapes, 0.0)
    names = list(shapes)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
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
            ]
            for name, (url, params) in zip(names, requests, strict=True):  # interleaved
                before = cpu_of(server)
                shapes[name].append(await timed(client, url, params))
                cpu[name] += cpu_of(server) - before
    base50 = statistics.median(shapes[names[0]])
    print("\n| request | p50 | p99 | server CPU / request | p50 ÷ baseline p50 |\n| --- | --- | --- | --- | --- |")
    for name, values in shapes.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} ms | {percentile(values, 0.99) * 1000:.1f} ms "
              f"| {cpu[name] / len(values) * 1000:.1f} ms | {statistics.median(values) / base50:.2f}× |")


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
    print(f"\nrace: {clients} clients × {slots} Slots = {attempts} $book attempts in {race_wall:.1f} s: "
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
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()
    practitioners = args.practitioners or (10 if args.quick else 50)
    days = args.days or (7 if args.quick else 30)
    slots = args.slots or (200 if args.quick else 1000)
    random.seed(20261201)
    print(f"cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}  practitioners: {practitioners}  "
          f"days: {days}  Slots: {practitioners * days * 32}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as db:
        port = args.port
        base = f"http://127.0.0.1:{port}/fhir"
        server = start_server(db.uri, port)
        try:
            wait_up(base)
            begin = time.perf_counter()
            with httpx.Client(base_url=base, timeout=300) as api:
                people = load(api, practitioners, days)
            print(f"loaded in {time.perf_counter() - begin:.0f} s")
            asyncio.run(bench_find(base, people, days, args.rounds, server.pid))
            asyncio.run(bench_race(base, slots, args.clients, server.pid))
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
