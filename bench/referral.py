"""Closed-loop referral benchmark: what the referral rules cost a Task update, and how soon
the requester's Communication follows an acceptance, each beside a same-run baseline.

Starts the embedded database and one server's Services in this process (auth on, the
built-in referral workflow, Provenance and audit on), with two organizations and their
practitioners, then, interleaved round by round:

1. rules: R updates of a referral Task (in-progress ↔ on-hold, by the performer: the side
   lookups, the state machine, businessStatus) beside R updates of the same Task without the
   fulfill code (no rule applies); CPU per update of this process and of the database, and
   wall time p50;
2. accept → effect: K referrals accepted one by one; latency from the accepting write's
   return to the requester's Communication committed (found by its identifier), p50/p99.

    .venv/bin/python bench/referral.py --quick       # R = 100, K = 10
    .venv/bin/python bench/referral.py               # R = 400, K = 40, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds, percentile
from fhir_server.config import Settings
from fhir_server.context import Principal, RequestContext
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.services import Services, build_services
from fhir_server.storage import schema
from workflows import EFFECT_SYSTEM

Doc = dict[str, Any]
FULFILL = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}
OTHER = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "approve"}]}




def as_user(settings: Settings, user: str, interaction: str) -> RequestContext:
    principal = Principal(client_id="bench", fhir_user=user, scopes=frozenset({"user/*.cruds"}))
    return RequestContext(base_url=settings.base_url, interaction=interaction, principal=principal)


DIRECTORY: list[Doc] = [
    {"resourceType": "Organization", "id": "north"},
    {"resourceType": "Organization", "id": "south"},
    {"resourceType": "Practitioner", "id": "dr-north"},
    {"resourceType": "Practitioner", "id": "dr-south"},
    {"resourceType": "PractitionerRole", "id": "north-gp", "active": True,
     "practitioner": {"reference": "Practitioner/dr-north"}, "organization": {"reference": "Organization/north"}},
    {"resourceType": "PractitionerRole", "id": "south-cardiologist", "active": True,
     "practitioner": {"reference": "Practitioner/dr-south"}, "organization": {"reference": "Organization/south"}},
]


async def referral(services: Services, settings: Settings, code: Doc, status: str = "requested") -> Doc:
    context = as_user(settings, "Practitioner/dr-north", "create")
    sr = await services.repository.create(context, {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/bench"}, "requester": {"reference": "PractitionerRole/north-gp"}})
    task = await services.repository.create(context, {
        "resourceType": "Task", "status": status, "intent": "order", "code": code,
        "focus": {"reference": f"ServiceRequest/{sr.stored.id}"}, "for": {"reference": "Patient/bench"},
        "requester": {"reference": "PractitionerRole/north-gp"}, "owner": {"reference": "Organization/south"}})
    return task.stored.resource


async def update(services: Services, settings: Settings, task: Doc, status: str) -> Doc:
    body = {k: v for k, v in task.items() if k != "meta"} | {"status": status}
    outcome = await services.repository.update(as_user(settings, "Practitioner/dr-south", "update"),
                                               "Task", task["id"], body)
    return outcome.stored.resource


async def rules_round(services: Services, settings: Settings, db_pid: str, rounds: int) -> dict[str, Doc]:
    """Updates of a referral Task and of a plain one, alternating, so both see the same machine."""
    tasks = {}
    for name, code in (("referral", FULFILL), ("plain", OTHER)):
        task = await referral(services, settings, code)
        task = await update(services, settings, task, "accepted")
        tasks[name] = await update(services, settings, task, "in-progress")
    stats: dict[str, Doc] = {n: {"wall": [], "cpu": 0.0, "db": 0.0} for n in tasks}
    for i in range(rounds):
        for name in ("referral", "plain") if i % 2 == 0 else ("plain", "referral"):
            status = "on-hold" if tasks[name]["status"] == "in-progress" else "in-progress"
            cpu, db, started = cpu_seconds(), cpu_seconds(db_pid), time.perf_counter()
            tasks[name] = await update(services, settings, tasks[name], status)
            stats[name]["wall"].append(time.perf_counter() - started)
            stats[name]["cpu"] += cpu_seconds() - cpu
            stats[name]["db"] += cpu_seconds(db_pid) - db
    return stats


async def effect_round(services: Services, settings: Settings, count: int) -> list[float]:
    communications = services.database.current("Communication")
    latencies = []
    for _ in range(count):
        task = await referral(services, settings, FULFILL)
        accepted = await update(services, settings, task, "accepted")
        done = time.perf_counter()
        value = f"referral/Task/{task['id']}/_history/{accepted['meta']['versionId']}/notify-requester-accepted"
        while await communications.find_one({schema.index_field("identifier|"): f"{EFFECT_SYSTEM}|{value}"}, {"_id": 1}) is None:
            if time.perf_counter() - done > 30:
                raise RuntimeError(f"no Communication {value} in 30 s")
            await asyncio.sleep(0.002)
        latencies.append(time.perf_counter() - done)
        await asyncio.sleep(0.1)  # ≈ 10 acceptances/s at most
    return latencies


async def main(args: argparse.Namespace) -> None:
    with EmbeddedDatabase(None) as embedded:
        process = embedded._process  # the database's own CPU is part of a write's cost
        db_pid = str(process.pid) if process is not None else "self"
        settings = Settings(mongodb_uri=embedded.uri, database=f"bench_referral_{uuid.uuid4().hex[:6]}",
                            auth_enabled=True, extra={"provenance": "on", "audit": "on"})
        services = await build_services(settings)
        await services.start()
        try:
            system = RequestContext.system(settings.base_url, "update")
            for resource in DIRECTORY:
                await services.repository.update(system, resource["resourceType"], resource["id"], resource)
            results: dict[str, Doc] = {"referral": {"wall": [], "cpu": 0.0, "db": 0.0},
                                       "plain": {"wall": [], "cpu": 0.0, "db": 0.0}}
            latencies: list[float] = []
            for _ in range(args.rounds):
                for name, part in (await rules_round(services, settings, db_pid, args.updates)).items():
                    results[name]["wall"] += part["wall"]
                    results[name]["cpu"] += part["cpu"]
                    results[name]["db"] += part["db"]
                latencies += await effect_round(services, settings, args.referrals)
        finally:
            await services.close()
    n = len(results["plain"]["wall"])
    print(f"Task update, {n} each, interleaved ({args.rounds} rounds):")
    for name in ("plain", "referral"):
        r = results[name]
        print(f"  {name:9s} wall p50 {statistics.median(r['wall']) * 1000:6.2f} ms  "
              f"server CPU {r['cpu'] / n * 1000:6.2f} ms/update  database CPU {r['db'] / n * 1000:6.2f} ms/update")
    ratio = lambda key: results["referral"][key] / max(results["plain"][key], 1e-9)  # noqa: E731
    print(f"  referral / plain: wall p50 {statistics.median(results['referral']['wall']) / statistics.median(results['plain']['wall']):.2f}x"
          f"  server CPU {ratio('cpu'):.2f}x  database CPU {ratio('db'):.2f}x")
    print(f"accept → requester's Communication committed, {len(latencies)} referrals: "
          f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms  p99 {percentile(latencies, 0.99) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="R = 100, K = 10, 1 round")
    parser.add_argument("--updates", type=int, default=400, help="updates of each Task per round")
    parser.add_argument("--referrals", type=int, default=40, help="acceptances per round")
    parser.add_argument("--rounds", type=int, default=3)
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.updates, parsed.referrals, parsed.rounds = 100, 10, 1
    asyncio.run(main(parsed))
