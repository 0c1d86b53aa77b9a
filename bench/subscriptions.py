"""Subscriptions benchmark: commit -> rest-hook arrival latency, notification throughput, and
the write-path cost of the outbox.

Starts the embedded database and `fhir-server serve` as separate processes, a rest-hook
receiver (asyncio, HTTP/1.1 keep-alive) in this process, and 100 active topic Subscriptions
(task-status, each filtered on its own owner). Then:

1. latency at 50 and at 500 writes/s (open loop; each write matches one Subscription):
   median and p99 from the write's 201 (the commit acknowledged) to the notification's
   arrival at the receiver;
2. throughput: writes that each match all 100 Subscriptions, events delivered per second;
3. create throughput (16 clients) with no Subscription, beside the same with 100 active
   ones (each write matching one, delivered while measuring).

    .venv/bin/python bench/subscriptions.py [--seconds 10]

`--auth`: the server runs with SMART on (the default configuration: auth, Consent, audit);
each Subscription is owned by its own user (`user/Subscription.cruds user/Task.rs`,
fhirUser Practitioner/p<i>), so every event is judged once per owner as a read by that owner
(subscriptions.audience), the writes come from one `system/*.cruds` client. `--baseline DIR`
(a `git archive` of an earlier tree) runs the same on that tree's server, interleaved
`--rounds` times, and prints the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds, percentile
from bench.servers import serve, wait_ready
from fhir_server.embedded_db import EmbeddedDatabase

TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/task-status"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SUBSCRIPTIONS = 100



class Receiver:
    """Records, per Task id, when its notification arrived (every event of every Bundle)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.events = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                now = time.perf_counter()
                if body:
                    bundle = json.loads(body)
                    for entry in bundle.get("entry", [])[1:]:
                        self.arrivals.setdefault(entry["fullUrl"].rsplit("/", 1)[-1], now)
                        self.events += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # (cancelled: a connection still open when a run's event loop ends)
        finally:
            writer.close()


def task(owner: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient/bench"}, "owner": {"reference": owner}}


def subscription(endpoint: str, flt: str) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": TOPIC,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": flt}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                    "valueCode": "id-only"}]}}}


async def subscribe(client: httpx.AsyncClient, receiver: Receiver, filters: list[str],
                    owners: list[str] | None = None) -> list[str]:
    """`owners`: one bearer token per Subscription (auth on), else the client's own."""
    ids = []
    for i, flt in enumerate(filters):
        headers = {"Authorization": f"Bearer {owners[i]}"} if owners else None
        r = await client.post("/Subscription", json=subscription(f"http://127.0.0.1:{receiver.port}/{i}", flt),
                              headers=headers)
        if r.status_code != 201:
            raise RuntimeError(f"Subscription refused: {r.status_code} {r.text[:300]}")
        ids.append(r.json()["id"])
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        r = await client.get("/Subscription", params={"status": "active", "_count": "1000", "_summary": "count"})
        if r.json().get("total", 0) >= len(ids):
            return ids
        await asyncio.sleep(0.2)
    raise RuntimeError("subscriptions did not become active")


async def unsubscribe(client: httpx.AsyncClient, ids: list[str]) -> None:
    for sub_id in ids:
        await client.delete(f"/Subscription/{sub_id}")


async def latency(client: httpx.AsyncClient, receiver: Receiver, rate: float, seconds: float) -> dict[str, float]:
    """Open loop at `rate` writes/s; each write's owner matches one Subscription."""
    committed: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    late = 0
    errors = 0
    in_flight = asyncio.Semaphore(64)  # beyond that, writes queue here (the rate drops)

    async def write(i: int) -> None:
        nonlocal errors
        async with in_flight:
            try:
                r = await client.post("/Task", json=task(f"Practitioner/p{i % SUBSCRIPTIONS}"),
                                      headers={"Prefer": "return=minimal"})
            except httpx.HTTPError:
                errors += 1
                return
            if r.status_code != 201:
                errors += 1
                return
            committed[r.headers["location"].split("/")[-3]] = time.perf_counter()

    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late += 1
        tasks.append(asyncio.create_task(write(i)))
    await asyncio.gather(*tasks)
    wrote = time.perf_counter() - start
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and not all(t in receiver.arrivals for t in committed):
        await asyncio.sleep(0.05)
    delays = [(receiver.arrivals[t] - c) * 1000 for t, c in committed.items() if t in receiver.arrivals]
    return {"rate": len(committed) / wrote, "n": len(committed), "delivered": len(delays),
            "errors": errors, "p50": statistics.median(delays), "p99": percentile(delays, 0.99),
            "max": max(delays)}


async def throughput(client: httpx.AsyncClient, receiver: Receiver, writes: int) -> dict[str, float]:
    """Writes matching all 100 Subscriptions; events delivered per second until all arrived."""
    before = receiver.events
    sem = asyncio.Semaphore(16)

    async def write() -> None:
        async with sem:
            await client.post("/Task", json=task("Practitioner/everyone"), headers={"Prefer": "return=minimal"})

    start = time.perf_counter()
    await asyncio.gather(*(write() for _ in range(writes)))
    expected = writes * SUBSCRIPTIONS
    deadline = time.perf_counter() + 180
    while receiver.events - before < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    return {"events": receiver.events - before, "expected": expected, "per_s": (receiver.events - before) / elapsed}


async def create_rate(client: httpx.AsyncClient, seconds: float, clients: int = 16) -> tuple[float, int]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            await client.post("/Task", json=task(f"Practitioner/p{(k * 7 + i) % SUBSCRIPTIONS}"),
                              headers={"Prefer": "return=minimal"})
            done += 1
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    return done / (time.perf_counter() - start), done



class Cpu:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def used(self, count: int) -> dict[str, float]:
        """ms of CPU per `count`, per process."""
        return {name: (cpu_seconds(pid) - self.start[name]) * 1000 / max(count, 1)
                for name, pid in self.pids.items()}

    def per(self, count: int) -> str:
        return "   ".join(f"{name} {ms:.1f} ms" for name, ms in self.used(count).items())


def server_env(uri: str, database: str, port: int, auth: bool) -> dict[str, str]:
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": database, "FHIR_PORT": str(port),
           "FHIR_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1"}
    if auth:
        env.pop("FHIR_AUTH_DISABLED", None)
    else:
        env["FHIR_AUTH_DISABLED"] = "1"
    return env


async def mint(env: dict[str, str], scopes: list[str], fhir_users: list[str | None]) -> list[str]:
    """Tokens signed with the server's key (as `fhir-server token` does), one per fhirUser."""
    from pymongo import AsyncMongoClient

    from fhir_server.auth.cli import mint_dev_token
    from fhir_server.config import Settings
    from fhir_server.services import auth_settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env["MONGODB_URI"])
    try:
        db, auth = client[env["FHIR_DATABASE"]], auth_settings(settings)
        return [await mint_dev_token(db, auth, scopes, fhir_user=user, client_id="bench") for user in fhir_users]
    finally:
        await client.close()


async def run(env: dict[str, str], port: int, seconds: float, pids: dict[str, int], auth: bool,
              rates: list[int]) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}/fhir"
    await asyncio.to_thread(wait_ready, base)
    receiver = Receiver()
    await receiver.start()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers: dict[str, str] = {}
    owners: list[str] | None = None
    if auth:
        headers["Authorization"] = f"Bearer {(await mint(env, ['system/*.cruds'], [None]))[0]}"
        owners = await mint(env, ["user/Subscription.cruds", "user/Task.rs"],
                            [f"Practitioner/p{i}" for i in range(SUBSCRIPTIONS)])
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits, headers=headers) as client:
        cpu = Cpu(pids)
        baseline, created = await create_rate(client, seconds)
        print(f"create, no subscription          {baseline:8.0f} /s   CPU per create: {cpu.per(created)}")
        subs = await subscribe(client, receiver, [f"Task?owner=Practitioner/p{i}" for i in range(SUBSCRIPTIONS)],
                               owners)
        events = receiver.events
        cpu = Cpu(pids)
        with_subs, created = await create_rate(client, seconds)
        print(f"create, 100 subscriptions        {with_subs:8.0f} /s   ({(1 - with_subs / baseline) * 100:+.1f}% slower)")
        start = time.perf_counter()
        while receiver.events - events < created:  # the backlog of that run, drained
            await asyncio.sleep(0.05)
        used = cpu.used(created)
        out.update({f"cpu_{name}": ms for name, ms in used.items()})
        print(f"  its {created} notifications all delivered {time.perf_counter() - start:.1f} s after the last write;"
              f" CPU per create + its delivery: {cpu.per(created)}")
        for rate in rates:
            r = await latency(client, receiver, rate, seconds)
            out[f"p50_at_{rate}"], out[f"p99_at_{rate}"] = r["p50"], r["p99"]
            print(f"latency at {rate:>3} writes/s (got {r['rate']:5.0f}/s)  p50 {r['p50']:7.1f} ms   "
                  f"p99 {r['p99']:7.1f} ms   max {r['max']:7.1f} ms   delivered {r['delivered']}/{r['n']}"
                  f"   failed writes {r['errors']}")
            await asyncio.sleep(2)
        await unsubscribe(client, subs)
        again, _ = await create_rate(client, seconds)  # the machine is shared: baseline again
        print(f"create, no subscription (again)  {again:8.0f} /s   -> with 100: "
              f"{(1 - with_subs / ((baseline + again) / 2)) * 100:+.1f}% slower than their mean")
        subs = await subscribe(client, receiver, ["Task?owner=Practitioner/everyone"] * SUBSCRIPTIONS, owners)
        cpu = Cpu(pids)
        t = await throughput(client, receiver, writes=int(20 * seconds))
        out["events_per_s"] = t["per_s"]
        out.update({f"cpu_per_event_{name}": ms for name, ms in cpu.used(int(t["events"])).items()})
        print(f"throughput (each write -> 100)   {t['per_s']:8.0f} events/s delivered   ({t['events']}/{t['expected']})"
              f"   CPU per event: {cpu.per(int(t['events']))}")
        await unsubscribe(client, subs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--auth", action="store_true", help="SMART on, one owner per Subscription")
    parser.add_argument("--baseline", type=Path, help="a tree to compare with (git archive of a commit)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions per tree")
    parser.add_argument("--rates", default="50,500", help="open-loop write rates of the latency runs")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-subs-"))
    trees = [("current", Path(__file__).resolve().parent.parent)]
    if args.baseline:
        trees.append(("baseline", args.baseline.resolve()))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    with EmbeddedDatabase(data) as db:
        port = 18000 + os.getpid() % 1000
        print(f"server log: {data / 'server.log'}; load average before: {os.getloadavg()}")
        for r in range(args.rounds):
            for name, tree in (trees if r % 2 == 0 else trees[::-1]):
                print(f"--- {name} ({tree}), round {r + 1}, load average {os.getloadavg()}")
                env = server_env(db.uri, f"bench_{uuid.uuid4().hex[:6]}", port, args.auth)
                server = serve(env, port, data / f"server-{name}-{r}.log", tree=tree)
                try:
                    assert db._process is not None
                    results[name].append(asyncio.run(run(env, port, args.seconds,
                                                         {"server": server.pid, "database": db._process.pid},
                                                         args.auth, [int(x) for x in args.rates.split(",")])))
                finally:
                    server.terminate()
                    server.wait(30)
        print(f"load average after: {os.getloadavg()}")
    if args.baseline:
        print("median over rounds: current / baseline (ratio)")
        for key in results["current"][0]:
            now = statistics.median(x[key] for x in results["current"])
            was = statistics.median(x[key] for x in results["baseline"])
            print(f"  {key:<28} {now:9.2f} / {was:9.2f}   ({now / was if was else float('nan'):.2f}x)")


if __name__ == "__main__":
    main()
