"""Virtual visit benchmark: booked → room recorded (the engine's workflow), and `$join`, each
beside a same-run baseline.

Starts the embedded database and one server's Services in this process (engine, dispatcher,
built-in video provider on default settings), then, interleaved round by round:

1. booked → room recorded: a booked virtual Appointment is created; latency from that write
   returning to the room's address being readable on the Appointment (polled every 2 ms),
   p50/p99; baseline: the create's own round trip;
2. `$join` (the operation, without HTTP): the first join of a visit (token + the Encounter's
   conditional create) and a later one (token only), p50/p99; baseline: a read of the
   Appointment.

CPU seconds of this process (server and client share it) from /proc.

    .venv/bin/python bench/telehealth.py --quick     # 20 visits
    .venv/bin/python bench/telehealth.py             # 100 visits
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds, percentile
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.operations.join import Join
from fhir_server.services import build_services
from telehealth.virtual_service import URL, read

Doc = dict[str, Any]


def appointment(n: int) -> Doc:
    start = datetime.now(UTC) + timedelta(minutes=10)
    return {"resourceType": "Appointment", "status": "booked", "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "extension": [{"url": URL, "extension": [{"url": "maxParticipants", "valuePositiveInt": 2}]}],
            "participant": [{"actor": {"reference": f"Patient/p{n}"}, "status": "accepted"},
                            {"actor": {"reference": f"Practitioner/d{n}"}, "status": "accepted"}]}


async def run(uri: str, visits: int) -> None:
    settings = Settings(mongodb_uri=uri, database="bench_telehealth", auth_enabled=False)
    services = await build_services(settings)
    await services.start()
    assert services.telehealth is not None
    join = Join(services.repository, services.search, services.telehealth)
    system = RequestContext.system(settings.base_url, "create")
    created, recorded, first, later, reads = [], [], [], [], []
    cpu = cpu_seconds()
    try:
        for n in range(visits):
            t0 = time.perf_counter()
            outcome = await services.repository.create(system, appointment(n))
            t1 = time.perf_counter()
            created.append(t1 - t0)
            aid = outcome.stored.id
            while True:
                stored = await services.repository.read(system, "Appointment", aid)
                service = read(stored.resource)
                if service is not None and service.address:
                    break
                await asyncio.sleep(0.002)
            recorded.append(time.perf_counter() - t1)
            for who, into in ((f"Patient/p{n}", first), (f"Practitioner/d{n}", later)):
                t0 = time.perf_counter()
                await join(system, aid, who)
                into.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await services.repository.read(system, "Appointment", aid)
            reads.append(time.perf_counter() - t0)
    finally:
        await services.close()
    cpu = cpu_seconds() - cpu

    def line(name: str, values: list[float], base: list[float]) -> None:
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        b50 = percentile(base, 0.5) * 1000
        print(f"{name:<34} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms   ({p50 / b50:4.1f}× baseline p50 {b50:.1f} ms)")

    print(f"{visits} virtual visits, CPU {cpu:.1f} s in this process")
    line("booked → room recorded", recorded, created)
    line("$join, first (token + Encounter)", first, reads)
    line("$join, later (token)", later, reads)
    print(f"{'baseline: create Appointment':<34} p50 {percentile(created, 0.5) * 1000:7.1f} ms")
    print(f"{'baseline: read Appointment':<34} p50 {percentile(reads, 0.5) * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with EmbeddedDatabase(None) as db:
        asyncio.run(run(db.uri, 20 if args.quick else 100))


if __name__ == "__main__":
    main()
