"""Hand-off benchmark: accepted → transferred (the engine's one transaction committed), beside
a same-run baseline (the accept itself: one Task update through the write pipeline).

Starts the embedded database and one server's Services in this process (the built-in hand-off
workflow, its timers and the subscription dispatcher on default settings), then K times, about
5 per second: a focus Task owned by Practitioner/a, a hand-off to Practitioner/b, its accept.
Latency = the completed version's commit time - the accepted version's commit time (both
`meta.lastUpdated`, stamped at commit; millisecond resolution), so polling adds nothing.

    .venv/bin/python bench/handoff.py --samples 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds, percentile
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.handoffs import TASK_CODES
from fhir_server.services import build_services

Doc = dict[str, Any]




def stamp(resource: Doc) -> datetime:
    return datetime.fromisoformat(resource["meta"]["lastUpdated"].replace("Z", "+00:00"))


async def run(uri: str, k: int) -> None:
    settings = Settings(mongodb_uri=uri, database="bench_handoff", auth_enabled=False)
    services = await build_services(settings)
    await services.start()
    repository = services.repository
    context = RequestContext.system(settings.base_url)
    try:
        accepted: list[tuple[str, datetime]] = []
        baseline: list[float] = []
        cpu = cpu_seconds()
        for i in range(k):
            focus = (await repository.create(context, {
                "resourceType": "Task", "status": "in-progress", "intent": "order",
                "for": {"reference": f"Patient/p{i}"}, "owner": {"reference": "Practitioner/a"}})).stored
            handoff = (await repository.create(context, {
                "resourceType": "Task", "status": "requested", "intent": "order",
                "code": {"coding": [{"system": TASK_CODES, "code": "handoff"}]},
                "focus": {"reference": f"Task/{focus.id}"}, "for": {"reference": f"Patient/p{i}"},
                "requester": {"reference": "Practitioner/a"}, "owner": {"reference": "Practitioner/b"}})).stored
            await asyncio.sleep(0.1)  # the request's event (timer scheduled) before the answer
            start = time.perf_counter()
            answer = {**handoff.resource, "status": "accepted"}
            written = (await repository.update(context, "Task", handoff.id, answer)).stored
            baseline.append(time.perf_counter() - start)
            accepted.append((handoff.id, stamp(written.resource)))
            await asyncio.sleep(0.1)
        latencies: list[float] = []
        deadline = time.monotonic() + 60
        for handoff_id, at in accepted:
            while time.monotonic() < deadline:
                current = (await repository.read(context, "Task", handoff_id)).resource
                if current["status"] == "completed":
                    latencies.append((stamp(current) - at).total_seconds())
                    break
                await asyncio.sleep(0.05)
        spent = cpu_seconds() - cpu
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        b50, b99 = statistics.median(baseline), percentile(baseline, 0.99)
        print(f"\nhand-off, K = {k} (transferred {len(latencies)})")
        print("| measure | p50 | p99 | baseline p50 (the accept's update) | baseline p99 | p50 ÷ baseline |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(f"| accepted committed → transfer committed | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms "
              f"| {b50 * 1000:.1f} ms | {b99 * 1000:.1f} ms | {p50 / b50:.1f}× |")
        print(f"\nCPU of this process (server + database client): {spent:.2f} s over {k} hand-offs")
    finally:
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    with EmbeddedDatabase(None) as db:
        asyncio.run(run(db.uri, args.samples))


if __name__ == "__main__":
    main()
