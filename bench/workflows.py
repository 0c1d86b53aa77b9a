"""Workflow engine benchmark, each figure beside a same-run baseline.

Part 1, the engine in this process (the embedded database and one server's Services: the
engine, its timer runner and the subscription dispatcher on default settings):

1. timer lag: N pending timers (not yet due) in the `timers` collection; K timers due at
   staggered moments soon; lag = fired (the handler called) - due, p50/p99;
2. trigger → effect: K Tasks written `completed` one by one (≈ 10/s); latency from the write's
   commit (repository.create returned) to the workflow's effect committed (its conditional
   create returned), p50/p99;
3. baseline, interleaved with both: a raw `insert_one` round trip on the same database.

Part 2, a real `fhir-server serve` process (the workflows of `measured()` below, named by
FHIR_WORKFLOW_MODULES) and a rest-hook receiver in this process, open loop at 10 and 50
triggering writes/s (`--rates`), rounds interleaved:

- `baseline`: a Communication written by the client → its notification received (no workflow);
- `toy`: a Task written `completed` → the engine's Communication committed → its notification;
- `care-gaps`: a CarePlan with an overdue activity → the care-gap DetectedIssue and Task
  committed → the CareTeam side's notification of the Task (topic task-status, owner = the team).

The other side's Subscriptions are topic-based, filtered to it, id-only, rest-hook: the
requester's on communication-received, the CareTeam's on task-status.

"Triggering commit" is the client receiving the write's 201; "effect committed" the workflow's
last effect returning in the server (wall clock, recorded in collection `bench_effects` after
the measurement); "received" the receiver reading the notification. CPU from /proc.

    .venv/bin/python bench/workflows.py --quick      # N = 10,000, K = 30; 5 s per rate
    .venv/bin/python bench/workflows.py              # N = 100,000, K = 100; 10 s per rate, 2 rounds
    .venv/bin/python bench/workflows.py --only rates # part 2 only (--only engine: part 1 only)
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds, percentile
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.services import build_services
from workflows import Effects, Event, Timer, Workflow
from workflows.caregaps import CareGaps

Doc = dict[str, Any]




class Bench(Workflow):
    name: ClassVar[str] = "bench"
    criteria: ClassVar[str | None] = "Task?status=completed"

    def __init__(self) -> None:
        self.effected: dict[str, float] = {}
        self.fired: dict[str, float] = {}

    async def on_event(self, event: Event, effects: Effects) -> None:
        await effects.create({"resourceType": "Communication", "status": "completed",
                              "basedOn": [{"reference": event.focus}]})
        self.effected[str(event.focus)] = time.perf_counter()

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        self.fired.setdefault(timer.key, time.perf_counter())


async def insert_round_trip(db: Any) -> float:
    start = time.perf_counter()
    await db["bench_baseline"].insert_one({"_id": uuid.uuid4().hex, "at": datetime.now(UTC)})
    return time.perf_counter() - start


def line(label: str, values: list[float], base: list[float]) -> str:
    p50, p99 = statistics.median(values), percentile(values, 0.99)
    b50, b99 = statistics.median(base), percentile(base, 0.99)
    return (f"| {label} | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms | {b50 * 1000:.1f} ms | {b99 * 1000:.1f} ms "
            f"| {p50 / b50:.0f}× |")


async def run(uri: str, pending: int, k: int) -> None:
    settings = Settings(mongodb_uri=uri, database="bench_workflows", auth_enabled=False)
    workflow = Bench()
    services = await build_services(settings, workflows=[workflow])
    await services.start()
    engine = services.workflows
    assert engine is not None
    db = services.database.db
    try:
        # 1. N pending timers, far from due: the runner must find the due ones among them.
        far = datetime.now(UTC) + timedelta(days=1)
        for start in range(0, pending, 5000):
            await db["timers"].insert_many([
                {"_id": f"bench/pending/{i}", "workflow": "bench", "due": far, "ready": far, "payload": {},
                 "status": "pending", "attempts": 0} for i in range(start, min(pending, start + 5000))])
        print(f"{pending:,} pending timers stored", file=sys.stderr)
        base_timers: list[float] = []
        due_at: dict[str, float] = {}
        cpu = cpu_seconds()
        for i in range(k):
            key = f"bench/due/{i}"
            delay = 0.2 + 0.05 * (i % 7)
            due_at[key] = time.perf_counter() + delay
            await engine.timers.schedule(key, datetime.now(UTC) + timedelta(seconds=delay), workflow="bench")
            base_timers.append(await insert_round_trip(db))
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 60
        while len(workflow.fired) < k and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lags = [workflow.fired[key] - due_at[key] for key in due_at if key in workflow.fired]
        timer_cpu = cpu_seconds() - cpu

        # 2. triggering commit → effect committed, about 10 writes/s.
        context = RequestContext.system(settings.base_url)
        committed: dict[str, float] = {}
        base_effects: list[float] = []
        cpu = cpu_seconds()
        for _ in range(k):
            task = {"resourceType": "Task", "status": "completed", "intent": "order",
                    "for": {"reference": f"Patient/{uuid.uuid4().hex[:8]}"}}
            stored = (await services.repository.create(context, task)).stored
            committed[f"Task/{stored.id}"] = time.perf_counter()
            base_effects.append(await insert_round_trip(db))
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 60
        while len(workflow.effected) < k and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        latencies = [workflow.effected[t] - committed[t] for t in committed if t in workflow.effected]
        effect_cpu = cpu_seconds() - cpu

        print(f"\nworkflow engine, {pending:,} pending timers, K = {k} (fired {len(lags)}, effected {len(latencies)})")
        print("| measure | p50 | p99 | baseline p50 (raw insert) | baseline p99 | p50 ÷ baseline |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(line(f"timer lag, due → fired ({pending:,} pending)", lags, base_timers))
        print(line("triggering commit → effect committed", latencies, base_effects))
        print(f"\nCPU of this process (server + database client): timers {timer_cpu:.2f} s, "
              f"effects {effect_cpu:.2f} s over {k} each")
    finally:
        await services.close()


# ---------------------------------------------------------------- part 2: a serve process, open loop

CAREGAP = "http://terminology.hl7.org/CodeSystem/v3-ActCode|CAREGAP"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


class MeasuredToy(Workflow):
    """Task completed → a Communication; records when the effect was committed."""

    name: ClassVar[str] = "bench-toy"
    criteria: ClassVar[str | None] = "Task?status=completed"

    async def on_event(self, event: Event, effects: Effects) -> None:
        outcome = await effects.create({"resourceType": "Communication", "status": "completed",
                                        "basedOn": [{"reference": event.focus}],
                                        "recipient": [{"reference": REQUESTER}]})
        at = time.time()
        await effects.repository.database.db["bench_effects"].update_one(
            {"_id": event.focus}, {"$setOnInsert": {"at": at, "effect": outcome.stored.id}}, upsert=True)


class MeasuredCareGaps(CareGaps):
    """The shipped care-gaps workflow; records when a CarePlan's effects were committed."""

    async def on_event(self, event: Event, effects: Effects) -> None:
        await super().on_event(event, effects)
        at = time.time()
        engine = effects.repository.search_engine
        query = engine.parse("Task", [("based-on", str(event.focus)), ("code", CAREGAP)])
        page = await effects.repository.search(effects.context("search-type"), query, with_total=False)
        if page.entries:
            await effects.repository.database.db["bench_effects"].update_one(
                {"_id": event.focus}, {"$setOnInsert": {"at": at, "effect": page.entries[0].id}}, upsert=True)


def measured() -> list[Workflow]:
    """FHIR_WORKFLOW_MODULES=bench.workflows:measured (the serve process of part 2)."""
    return [MeasuredToy(), MeasuredCareGaps()]


TOPICS = "http://fhir.care-coord.example/SubscriptionTopic/"
REQUESTER = "Practitioner/bench-requester"


def _topic_subscription(endpoint: str, topic: str, flt: str) -> Doc:
    """The other side's Subscription: a topic, filtered to itself, id-only, rest-hook."""
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": TOPICS + topic,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": flt}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                    "valueCode": "id-only"}]}}}


def _trigger(kind: str, i: int, patient: str, team: str) -> Doc:
    if kind == "baseline":
        return {"resourceType": "Communication", "status": "completed", "subject": {"reference": patient},
                "recipient": [{"reference": REQUESTER}]}
    if kind == "toy":
        return {"resourceType": "Task", "status": "completed", "intent": "order", "for": {"reference": patient}}
    overdue = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": patient},
            "careTeam": [{"reference": team}], "activity": [{"detail": {
                "status": "scheduled", "description": f"bench activity {i}", "scheduledPeriod": {"end": overdue}}}]}


async def _open_loop(client: Any, kind: str, rate: float, seconds: float, patient: str,
                     team: str) -> tuple[dict[str, float], int]:
    """Writes at `rate`/s for `seconds` (open loop); answers {"Type/id": 201 received} and errors."""
    committed: dict[str, float] = {}
    errors = 0
    in_flight = asyncio.Semaphore(64)
    rtype = {"baseline": "Communication", "toy": "Task", "care-gaps": "CarePlan"}[kind]

    async def write(i: int) -> None:
        nonlocal errors
        async with in_flight:
            try:
                r = await client.post(f"/{rtype}", json=_trigger(kind, i, patient, team),
                                      headers={"Prefer": "return=minimal"})
            except Exception:
                errors += 1
                return
            if r.status_code != 201:
                errors += 1
                return
            committed[f"{rtype}/{r.headers['location'].split('/')[-3]}"] = time.time()

    jobs: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.append(asyncio.create_task(write(i)))
    await asyncio.gather(*jobs)
    return committed, errors


async def _run_rates(uri: str, rates: list[float], seconds: float, rounds: int, pids: dict[str, int],
                     base: str, database: str) -> None:
    import httpx
    from pymongo import AsyncMongoClient

    from bench.subscriptions import Cpu, Receiver, wait_up

    await wait_up(base)
    offset = time.time() - time.perf_counter()  # the receiver stamps arrivals with perf_counter
    receiver = Receiver()
    await receiver.start()
    mongo: AsyncMongoClient[Doc] = AsyncMongoClient(uri)
    effects_at = mongo[database]["bench_effects"]
    rows: dict[tuple[str, float], dict[str, list[Any]]] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        patient = (await client.post("/Patient", json={"resourceType": "Patient"})).json()["id"]
        team = (await client.post("/CareTeam", json={"resourceType": "CareTeam", "status": "active",
                                                     "subject": {"reference": f"Patient/{patient}"}})).json()["id"]
        # The requester's side hears of Communications to it; the CareTeam's of Tasks it owns.
        for i, (topic, flt) in enumerate((("communication-received", f"Communication?recipient={REQUESTER}"),
                                          ("task-status", f"Task?owner=CareTeam/{team}"))):
            r = await client.post("/Subscription", json=_topic_subscription(
                f"http://127.0.0.1:{receiver.port}/{i}", topic, flt))
            assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while (await client.get("/Subscription", params={"status": "active", "_summary": "count"})).json()[
                "total"] < 2:
            assert time.monotonic() < deadline, "the bench's Subscriptions did not become active"
            await asyncio.sleep(0.2)
        for _ in range(rounds):
            for rate in rates:
                for kind in ("baseline", "toy", "care-gaps"):
                    cpu = Cpu(pids)
                    committed, errors = await _open_loop(client, kind, rate, seconds, f"Patient/{patient}",
                                                         f"CareTeam/{team}")
                    effected: dict[str, tuple[float, str]] = {}
                    wait_until = time.monotonic() + 60
                    while time.monotonic() < wait_until:
                        if kind == "baseline":
                            effected = {t: (c, t.split("/")[1]) for t, c in committed.items()}
                        else:
                            docs = await effects_at.find({"_id": {"$in": list(committed)}}).to_list(None)
                            effected = {d["_id"]: (d["at"], d["effect"]) for d in docs}
                        if len(effected) == len(committed) and all(
                                e in receiver.arrivals for _, e in effected.values()):
                            break
                        await asyncio.sleep(0.1)
                    row = rows.setdefault((kind, rate), {"effect": [], "notified": [], "errors": [], "cpu": []})
                    for trigger, at in committed.items():
                        if trigger in effected:
                            done, effect = effected[trigger]
                            if kind != "baseline":
                                row["effect"].append(done - at)
                            if effect in receiver.arrivals:
                                row["notified"].append(receiver.arrivals[effect] + offset - at)
                    row["errors"].append(errors)
                    row["cpu"].append(cpu.per(len(committed)))
                    await asyncio.sleep(1)
    await mongo.close()
    print(f"\nworkflows over HTTP: a serve process, open loop, {seconds:g} s per rate and kind, {rounds} round(s)")
    print("| trigger (writes/s) | commit → effect committed p50 | p99 | commit → other side notified p50 | p99 "
          "| samples |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (kind, rate), row in rows.items():
        eff = (f"{statistics.median(row['effect']) * 1000:.0f} ms | {percentile(row['effect'], 0.99) * 1000:.0f} ms"
               if row["effect"] else "— | —")
        note = (f"{statistics.median(row['notified']) * 1000:.0f} ms | {percentile(row['notified'], 0.99) * 1000:.0f} ms"
                if row["notified"] else "— | —")
        print(f"| {kind} at {rate:g}/s | {eff} | {note} | {len(row['notified'])} (failed writes "
              f"{sum(row['errors'])}) |")
    print("\nCPU per triggering write (server, database), per run:")
    for (kind, rate), row in rows.items():
        print(f"  {kind} at {rate:g}/s: " + "; ".join(str(c) for c in row["cpu"]))


def rates_part(rates: list[float], seconds: float, rounds: int) -> None:
    import subprocess

    from fhir_server.embedded_db import EmbeddedDatabase

    data = Path(tempfile.mkdtemp(prefix="bench-workflows-"))
    root = Path(__file__).resolve().parent.parent
    with EmbeddedDatabase(data) as db:
        port = 19000 + os.getpid() % 1000
        database = f"bench_wf_{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "MONGODB_URI": db.uri, "FHIR_DATABASE": database, "FHIR_AUTH_DISABLED": "1",
               "FHIR_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1", "FHIR_WORKFLOW_BUILTIN": "0",
               "FHIR_WORKFLOW_MODULES": "bench.workflows:measured", "PYTHONPATH": str(root)}
        print(f"server log: {data / 'server.log'}; load average before: {os.getloadavg()}", file=sys.stderr)
        server = subprocess.Popen([sys.executable, "-m", "fhir_server", "serve", "--port", str(port),
                                   "--log-level", "warning"], cwd=root, env=env,
                                  stdout=subprocess.DEVNULL, stderr=(data / "server.log").open("wb"))
        try:
            assert db._process is not None
            asyncio.run(_run_rates(db.uri, rates, seconds, rounds, {"server": server.pid, "database": db._process.pid},
                                   f"http://127.0.0.1:{port}/fhir", database))
        finally:
            print(f"load average after: {os.getloadavg()}")
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 pending timers, 30 samples, 5 s per rate")
    parser.add_argument("--pending", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--only", choices=("engine", "rates"))
    parser.add_argument("--rates", default="10,50", help="triggering writes per second (part 2)")
    parser.add_argument("--seconds", type=float, help="seconds per rate and kind (part 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (part 2)")
    args = parser.parse_args()
    pending = args.pending or (10_000 if args.quick else 100_000)
    samples = args.samples or (30 if args.quick else 100)
    if args.only != "rates":
        with EmbeddedDatabase(None) as db:
            asyncio.run(run(db.uri, pending, samples))
    if args.only != "engine":
        rates_part([float(r) for r in args.rates.split(",")], args.seconds or (5 if args.quick else 10),
                   args.rounds or (1 if args.quick else 2))


if __name__ == "__main__":
    main()
