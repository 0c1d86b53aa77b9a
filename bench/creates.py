"""Creates, counted by fixed work: CPU per `POST /Task` of the server and the database, for a
fixed number of creates and everything they set off (the subscription matcher, deliveries),
beside the raw driver's current+history transaction, in one run, interleaved.

bench/rest.py drives each server for a fixed time with wrk; on a loaded machine a window then
holds a few dozen creates while the matcher of the window before is still at work on the
shared database, which lands in the wrong window. Here each measurement is N creates from C
concurrent clients, then a wait until the server's outbox holds no unmatched event (and a
short settle for the acknowledgements), so every create's whole work is counted, in its own
window. Servers as in bench/rest.py (the shipped workflows on: their 15 Subscriptions are
matched against every Task); `--baseline DIR` adds another checkout's two servers.

    .venv/bin/python bench/creates.py [--creates 300] [--clients 8] [--rounds 3] [--baseline DIR] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import SCOPE, TASK, USER, Server, cpu_seconds, idle_rates, wait_up
from fhir_server.embedded_db import EmbeddedDatabase

SETTLE = 0.5  # seconds after the outbox is matched: delivery acknowledgements (every 50 ms)


def drained(mongo: MongoClient[dict[str, Any]], database: str, deadline: float) -> None:
    while mongo[database]["outbox"].count_documents({"m": False}) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(SETTLE)


async def post_all(base: str, bearer: str | None, creates: int, clients: int) -> float:
    headers = {"Prefer": "return=minimal", **({"Authorization": f"Bearer {bearer}"} if bearer else {})}
    left = list(range(creates))
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        async def worker() -> None:
            while left:
                left.pop()
                r = await http.post("/Task", json=TASK)
                if r.status_code != 201:
                    raise RuntimeError(f"{r.status_code}: {r.text[:300]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - t0


async def driver_all(uri: str, creates: int, clients: int) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, maxPoolSize=clients)
    db = client["bench_raw"]
    doc = {"res": b"x" * 600, "v": 1, "del": False}
    left = list(range(creates))
    try:
        async def worker() -> None:
            while left:
                left.pop()
                key = uuid.uuid4().hex

                async def txn(s: Any, key: str = key) -> None:
                    await db.c.insert_one({**doc, "_id": key}, session=s)
                    await db.ch.insert_one({**doc, "_id": f"{key}/1"}, session=s)
                async with client.start_session() as s:
                    await s.with_transaction(txn)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - t0
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout, run beside as `before: ...`")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 creates, one round")
    args = parser.parse_args()
    if args.quick:
        args.creates, args.rounds = 40, 1
    print(f"cores: {os.cpu_count()}  creates: {args.creates}  clients: {args.clients}  rounds: {args.rounds}  "
          f"load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        assert db._process is not None
        db_pid = db._process.pid
        servers = {"default": Server("default", db.uri, "bench_default", Path(tmp) / "default", {}),
                   "auth off": Server("auth off", db.uri, "bench_off", Path(tmp) / "off", {"FHIR_AUTH_DISABLED": "1"})}
        if args.baseline:
            servers["before: default"] = Server("before: default", db.uri, "bench_before_default",
                                                Path(tmp) / "before-default", {}, args.baseline)
            servers["before: auth off"] = Server("before: auth off", db.uri, "bench_before_off",
                                                 Path(tmp) / "before-off", {"FHIR_AUTH_DISABLED": "1"}, args.baseline)
        mongo: MongoClient[dict[str, Any]] = MongoClient(db.uri)
        try:
            for s in servers.values():
                wait_up(s.base, s.process)
            for s in servers.values():
                if "default" in s.name:
                    s.bearer = s.token(SCOPE, USER)
                asyncio.run(post_all(s.base, s.bearer, 20, 4))  # warm: first writes, caches, matcher
                drained(mongo, s.database, time.monotonic() + 60)
            idle = idle_rates([db_pid, *(s.process.pid for s in servers.values())])
            results: dict[str, list[dict[str, float]]] = {}
            for turn in range(args.rounds):
                print(f"-- round {turn + 1}  load average {os.getloadavg()[0]:.1f}")
                modes: list[tuple[str, Server | None]] = [("driver", None), *servers.items()]
                for name, s in modes:
                    pids = [db_pid] + ([s.process.pid] if s else [])
                    before = {p: cpu_seconds(p) for p in pids}
                    t0 = time.perf_counter()
                    if s is None:
                        took = asyncio.run(driver_all(db.uri, args.creates, args.clients))
                        time.sleep(SETTLE)
                    else:
                        took = asyncio.run(post_all(s.base, s.bearer, args.creates, args.clients))
                        drained(mongo, s.database, time.monotonic() + 120)
                    elapsed = time.perf_counter() - t0
                    used = {p: max(0.0, cpu_seconds(p) - before[p] - idle.get(p, 0.0) * elapsed) for p in pids}
                    row = {"rate": args.creates / took,
                           "server_ms": used[s.process.pid] / args.creates * 1000 if s else 0.0,
                           "db_ms": used[db_pid] / args.creates * 1000}
                    results.setdefault(name, []).append(row)
                    print(f"{name:<18} {row['rate']:7.1f} creates/s   server {row['server_ms']:6.2f} ms   "
                          f"database {row['db_ms']:6.2f} ms per create")
            summary(results)
        finally:
            for s in servers.values():
                s.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def summary(results: dict[str, list[dict[str, float]]]) -> None:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    def ratio(a: str, b: str, key: str) -> float:
        """Per round a/b, then the median."""
        def value(r: dict[str, float]) -> float:
            return r["server_ms"] + r["db_ms"] if key == "cpu" else r[key]
        return statistics.median(value(x) / max(1e-9, value(y)) for x, y in zip(results[a], results[b], strict=True))

    print(f"\nmedians over {len(results['driver'])} interleaved rounds (CPU ms per create)")
    print(f"  {'mode':<18} {'creates/s':>9} {'server':>8} {'database':>9} {'total':>7}")
    for mode in results:
        print(f"  {mode:<18} {med(mode, 'rate'):>9.1f} {med(mode, 'server_ms'):>8.2f} {med(mode, 'db_ms'):>9.2f} "
              f"{med(mode, 'server_ms') + med(mode, 'db_ms'):>7.2f}")
    for mode in ("default", "auth off", "before: default", "before: auth off"):
        if mode in results:
            print(f"  {mode} / driver: database CPU {ratio(mode, 'driver', 'db_ms'):.2f}x")
    for mode in ("default", "auth off"):
        if f"before: {mode}" in results:
            print(f"  {mode}, after / before: CPU {ratio(mode, f'before: {mode}', 'cpu'):.2f}x, "
                  f"database CPU {ratio(mode, f'before: {mode}', 'db_ms'):.2f}x, "
                  f"server CPU {ratio(mode, f'before: {mode}', 'server_ms'):.2f}x")


if __name__ == "__main__":
    main()
