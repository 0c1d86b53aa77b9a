"""REST core benchmark: read and create through the server vs the raw driver (the floor).

Starts the embedded database and `fhir-server serve` as separate processes (like production:
the server is its own process, so the load generator does not steal its event loop), then
drives them with N concurrent HTTP connections on loopback from wrk (Debian package `wrk`;
`make bench` installs it).

    .venv/bin/python bench/rest.py [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
from fhir_server.embedded_db import EmbeddedDatabase

TASK = {
    "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
    "description": "Call the patient about the cardiology referral",
    "for": {"reference": "Patient/p1"}, "owner": {"reference": "Practitioner/dr1"},
    "authoredOn": "2026-11-01T10:00:00Z",
    "identifier": [{"system": "urn:bench", "value": "t"}],
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def report(name: str, latencies: list[float], seconds: float) -> dict[str, float]:
    rate = len(latencies) / seconds
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    print(f"{name:<34} {rate:>9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   n={len(latencies)}")
    return {"rate": rate, "p50": p50, "p99": p99}


async def run_clients(clients: int, seconds: float, op) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await op(n, i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(clients)))
    return latencies, time.perf_counter() - started


async def bench_driver(uri: str, clients: int, seconds: float, ids: list[str]) -> dict[str, dict[str, float]]:
    client: AsyncMongoClient[dict] = AsyncMongoClient(uri, maxPoolSize=clients)
    db = client["bench_raw"]
    doc = {"res": b"x" * 600, "v": 1, "del": False}
    await db.t.insert_many([{**doc, "_id": i} for i in ids])

    async def find(n: int, i: int) -> None:
        await db.t.find_one({"_id": ids[(n * 7919 + i) % len(ids)]})

    async def insert(n: int, i: int) -> None:
        key = uuid.uuid4().hex

        async def work(s: Any) -> None:
            await db.c.insert_one({**doc, "_id": key}, session=s)
            await db.ch.insert_one({**doc, "_id": f"{key}/1"}, session=s)

        # As the server does: with_transaction retries on transient errors (SecantusDB reports
        # write conflicts between concurrent transactions inserting into the same collection).
        async with client.start_session() as s:
            await s.with_transaction(work)

    out = {}
    out["read"] = report("driver find-by-id", *await run_clients(clients, seconds, find))
    out["create"] = report("driver insert (current+history txn)", *await run_clients(clients, seconds, insert))
    await client.drop_database("bench_raw")
    await client.close()
    return out


WRK_POST = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Prefer"] = "return=minimal"
"""


def wrk(name: str, url: str, clients: int, seconds: float, script: str | None = None) -> dict[str, float]:
    """Drives the server with wrk (a C load generator): a Python generator on the same two
    cores measured itself more than the server (176 vs 665 req/s for the same GET)."""
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            cmd += ["-s", lua.name]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(pct: str) -> float:
        value, unit = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    suffix = f"   NON-2xx: {errors.group(1)}" if errors else ""
    print(f"{name:<34} {rate:>9.0f} req/s   p50 {ms('50'):6.2f} ms   p99 {ms('99'):6.2f} ms{suffix}")
    return {"rate": rate, "p50": ms("50"), "p99": ms("99")}


def bench_server(base: str, clients: int, seconds: float) -> dict[str, dict[str, float]]:
    with httpx.Client(base_url=base, timeout=30) as http:
        r = http.post("/Task", json=TASK)
        r.raise_for_status()
        task_id = r.json()["id"]
    out = {}
    out["read"] = wrk("server GET /Task/{id}", f"{base}/Task/{task_id}", clients, seconds)
    script = WRK_POST.format(body=orjson.dumps(TASK).decode())
    out["create"] = wrk("server POST /Task (validated)", f"{base}/Task", clients, seconds, script)
    return out


def start_server(uri: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": "bench", "FHIR_AUTH_DISABLED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def wait_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  clients: {args.clients}  seconds per measurement: {args.seconds}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as db:
        port = 18080
        base = f"http://127.0.0.1:{port}/fhir"
        server = start_server(db.uri, port)
        try:
            wait_up(base)
            ids = [uuid.uuid4().hex for _ in range(200)]
            raw = asyncio.run(bench_driver(db.uri, args.clients, args.seconds, ids))
            api = bench_server(base, args.clients, args.seconds)
        finally:
            server.terminate()
            server.wait(30)
    for kind in ("read", "create"):
        ratio = raw[kind]["rate"] / api[kind]["rate"]
        print(f"{kind}: server time per request = {ratio:.2f}x the raw driver's "
              f"(p50 {api[kind]['p50'] / raw[kind]['p50']:.2f}x)")


if __name__ == "__main__":
    main()
