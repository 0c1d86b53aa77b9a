"""Workflow engine benchmark: timer lag with many pending timers, and triggering commit →
effect committed, each beside a same-run baseline (a raw insert's round trip).

Starts the embedded database and one server's Services in this process (the engine, its
timer runner and the subscription dispatcher on default settings), then:

1. timer lag: N pending timers (not yet due) in the `timers` collection; K timers due at
   staggered moments soon; lag = fired (the handler called) - due, p50/p99;
2. trigger → effect: K Tasks written `completed` one by one (≈ 10/s); latency from the write's
   commit (repository.create returned) to the workflow's effect committed (its conditional
   create returned), p50/p99;
3. baseline, interleaved with both: a raw `insert_one` round trip on the same database.

    .venv/bin/python bench/workflows.py --quick      # N = 10,000, K = 30
    .venv/bin/python bench/workflows.py              # N = 100,000, K = 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.services import build_services
from workflows import Effects, Event, Timer, Workflow

Doc = dict[str, Any]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def cpu_seconds() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks of 10 ms


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 pending timers, 30 samples")
    parser.add_argument("--pending", type=int)
    parser.add_argument("--samples", type=int)
    args = parser.parse_args()
    pending = args.pending or (10_000 if args.quick else 100_000)
    samples = args.samples or (30 if args.quick else 100)
    with EmbeddedDatabase(None) as db:
        asyncio.run(run(db.uri, pending, samples))


if __name__ == "__main__":
    main()
