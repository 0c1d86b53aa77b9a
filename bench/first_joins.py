"""Concurrent first `$join`s of one visit: the transactions they start, the database's CPU and
the wall time, this checkout beside a baseline checkout, interleaved round by round.

Each round is a child process per tree (its own embedded database and Services, as
bench/telehealth.py): `--visits` booked virtual visits, each joined `--concurrent` times at
once (the operation without HTTP, as the server's own work naming the participant) before
anyone else joined. Per tree: transactions started per visit (a pymongo listener), database
CPU per visit (/proc of the SecantusDB child), this process's CPU per visit, p50 wall per
visit; and how many Encounters each visit got (must be 1).

    git archive 0b1bcb4 | tar -x -C /tmp/base
    .venv/bin/python bench/first_joins.py --baseline /tmp/base --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def _child(tree: Path, visits: int, concurrent: int) -> dict[str, Any]:
    sys.path.insert(0, str(tree))
    from pymongo import monitoring

    from bench.measures import cpu_seconds, percentile
    from fhir_server.config import Settings
    from fhir_server.context import RequestContext
    from fhir_server.embedded_db import EmbeddedDatabase
    from fhir_server.operations.join import VISIT_SYSTEM, Join
    from fhir_server.services import build_services
    from telehealth.virtual_service import URL, read

    class Transactions(monitoring.CommandListener):
        count = 0

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command.get("startTransaction"):
                Transactions.count += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    def database_pid(port: int) -> int:
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"secantusd" in c for c in cmdline) and str(port).encode() in cmdline:
                return int(entry.name)
        raise SystemExit("no database process")

    async def run(uri: str, db_pid: int) -> dict[str, Any]:
        from datetime import UTC, datetime, timedelta
        settings = Settings(mongodb_uri=uri, database="bench_first_joins", auth_enabled=False)
        services = await build_services(settings, listeners=[Transactions()])
        await services.start()
        assert services.telehealth is not None
        join = Join(services.repository, services.search, services.telehealth)
        system = RequestContext.system(settings.base_url, "create")
        walls, txns, db_cpu, own_cpu, encounters = [], [], [], [], []
        try:
            for n in range(visits):
                start = datetime.now(UTC) + timedelta(minutes=10)
                people = [f"Patient/p{n}", f"Practitioner/d{n}"]
                appointment = {
                    "resourceType": "Appointment", "status": "booked", "start": start.isoformat(),
                    "end": (start + timedelta(minutes=30)).isoformat(),
                    "extension": [{"url": URL, "extension": [{"url": "maxParticipants", "valuePositiveInt": 2}]}],
                    "participant": [{"actor": {"reference": r}, "status": "accepted"} for r in people]}
                aid = (await services.repository.create(system, appointment)).stored.id
                while True:  # the engine records the room
                    service = read((await services.repository.read(system, "Appointment", aid)).resource)
                    if service is not None and service.address:
                        break
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.3)  # the engine's own writes for the booking settle
                t0, c0, d0, x0 = time.perf_counter(), cpu_seconds(), cpu_seconds(db_pid), Transactions.count
                await asyncio.gather(*(join(system, aid, people[i % 2]) for i in range(concurrent)))
                walls.append(time.perf_counter() - t0)
                own_cpu.append(cpu_seconds() - c0)
                db_cpu.append(cpu_seconds(db_pid) - d0)
                txns.append(Transactions.count - x0)
                found = await services.repository.search(system, services.search.parse(
                    "Encounter", [("identifier", f"{VISIT_SYSTEM}|Appointment/{aid}")]), with_total=False)
                encounters.append(len(found.entries))
        finally:
            await services.close()
        return {"wall_p50_ms": percentile(walls, 0.5) * 1000, "transactions": sum(txns) / visits,
                "db_cpu_ms": sum(db_cpu) / visits * 1000, "server_cpu_ms": sum(own_cpu) / visits * 1000,
                "encounters": sorted(set(encounters))}

    with EmbeddedDatabase(None) as db:
        return asyncio.run(run(db.uri, database_pid(db.port)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=32)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.visits, args.concurrent)))
        return
    trees = {"this": HERE, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in (trees.items() if r % 2 == 0 else reversed(list(trees.items()))):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(tree), "--visits", str(args.visits),
                 "--concurrent", str(args.concurrent)], capture_output=True, text=True, cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(f"{args.concurrent} concurrent first joins per visit, {args.visits} visits x {args.rounds} rounds; "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for name, rows in results.items():
        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return sum(float(row[key]) for row in rows) / len(rows)
        print(f"  {name:<9} transactions/visit {mean('transactions'):6.1f}  database CPU/visit "
              f"{mean('db_cpu_ms'):7.1f} ms  server CPU/visit {mean('server_cpu_ms'):7.1f} ms  "
              f"wall p50 {mean('wall_p50_ms'):7.1f} ms  Encounters per visit "
              f"{sorted({e for row in rows for e in row['encounters']})}")
    if "baseline" in results:
        for key in ("transactions", "db_cpu_ms", "server_cpu_ms", "wall_p50_ms"):
            new = sum(float(r[key]) for r in results["this"])
            old = sum(float(r[key]) for r in results["baseline"])
            print(f"  {key}: this / baseline = {new / old:.2f}" if old else f"  {key}: baseline 0")


if __name__ == "__main__":
    main()
