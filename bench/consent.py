"""Consent and audit benchmark: what they cost the request path, in one run.

Starts the embedded database and two `fhir-server serve` processes on it with auth on: one
with audit off, one with audit on (Consent on in both). A GP (on the care team of patient A,
`user/*.rs`) then runs, at N concurrent clients:

1. `Task?patient=A&_count=20` with no Consent in the database, then again after patient A
   records a Consent with 5 provisions (opt-in; care team permitted; a pharmacist denied; the
   daughter denied messages; restricted data denied to everyone; an on-call doctor permitted
   for treatment only): the security-label provision makes a partial region, the costliest
   kind (the patient's Tasks are matched per request). Also `Task?patient=B` (B has no
   Consent) in the same phase: what A's Consent costs everyone else.
2. `GET /Task/{id}` on the audit-off server and on the audit-on server, alternately, and
   checks that every read served was recorded.

3. `--part scale`: two databases seeded alike with `--patients` (10,000) patients, a Task
   each (`--tasks-per-patient`), and in one of them a Consent per patient (opt-out; deny a pharmacist; deny
   restricted data), each served by its own process. The GP reads `GET /Task/{id}`, searches
   `Task?patient=P&_count=10` (random patients) and a worklist not scoped to a patient
   (`Task?owner=Practitioner/gp&status=requested&_count=10`) on both servers alternately.

    .venv/bin/python bench/consent.py [--clients 16] [--seconds 10] [--tasks 200]
    .venv/bin/python bench/consent.py --part scale [--patients 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds
from bench.rest import report, run_clients, wait_up
from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings
from fhir_server.consent.cache import GRACE_SECONDS
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.services import auth_settings

DATABASE = "bench_consent"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def ref(value: str) -> dict[str, str]:
    return {"reference": value}


def actor(reference: str) -> dict[str, Any]:
    return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP"}]}, "reference": ref(reference)}


CONSENT = {
    "resourceType": "Consent", "status": "active",
    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": ref("Patient/A"),
    "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
    "provision": {"provision": [
        {"type": "permit", "actor": [actor("CareTeam/team-A")]},
        {"type": "deny", "actor": [actor("Practitioner/pharmacist")]},
        {"type": "deny", "actor": [actor("RelatedPerson/daughter")],
         "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Communication"}]},
        {"type": "deny", "securityLabel": [{"system": CONFIDENTIALITY, "code": "R"}]},
        {"type": "permit", "actor": [actor("Practitioner/oncall")],
         "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]},
    ]},
}


def start_server(uri: str, port: int, data_dir: Path, database: str = DATABASE, **env: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    environment.update({"MONGODB_URI": uri, "FHIR_DATABASE": database, "FHIR_PROVENANCE": "off", **env})
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning",
         "--data-dir", str(data_dir)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def mint(uri: str, port: int, scopes: str, fhir_user: str | None = None, patient: str | None = None,
         database: str = DATABASE) -> str:
    settings = Settings(port=port, base_url=f"http://127.0.0.1:{port}/fhir", mongodb_uri=uri, database=database,
                        auth_enabled=True)

    async def work() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            return await mint_dev_token(client[database], auth_settings(settings), scopes.split(),
                                        fhir_user=fhir_user, patient=patient)
        finally:
            await client.close()

    return asyncio.run(work())


def seed(base: str, token: str, tasks: int) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {"A": [], "B": []}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for resource in (
            {"resourceType": "Practitioner", "id": "gp"},
            {"resourceType": "Patient", "id": "A"}, {"resourceType": "Patient", "id": "B"},
            {"resourceType": "CareTeam", "id": "team-A", "status": "active", "subject": ref("Patient/A"),
             "participant": [{"member": ref("Practitioner/gp")}]},
        ):
            http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource).raise_for_status()
        for patient in ("A", "B"):
            entries = []
            for n in range(tasks):
                task: dict[str, Any] = {"resourceType": "Task", "status": "requested", "intent": "order",
                                        "for": ref(f"Patient/{patient}"), "owner": ref("Practitioner/gp")}
                if n % 20 == 0:
                    task["meta"] = {"security": [{"system": CONFIDENTIALITY, "code": "R"}]}
                entries.append({"resource": task, "request": {"method": "POST", "url": "Task"}})
            reply = http.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
            reply.raise_for_status()
            ids[patient] = [e["response"]["location"].split("/")[1] for e in reply.json()["entry"]]
    return ids



async def measure(base: str, token: str, clients: int, seconds: float, name: str,
                  path: str | list[str], expect: int | None = None, pids: list[int] | None = None) -> dict[str, float]:
    """Throughput and latency of GETs of `path`; "served" counts every request made; "cpu" is
    the CPU time `pids` (server and database) spent per request in the timed window: the
    machine's capacity for this request, which other load on the machine disturbs far less
    than throughput."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=headers) as http:
        paths = path if isinstance(path, list) else [path]
        served = 0

        async def op(n: int, i: int) -> None:
            nonlocal served
            r = await http.get(paths[(n * 7919 + i) % len(paths)])
            assert r.status_code == 200, r.text[:300]
            served += 1
            if expect is not None:
                assert len(r.json().get("entry", [])) == expect

        await run_clients(clients, 1.0, op)  # warm up
        before = (cpu_seconds(*pids) if pids else 0.0)
        latencies, elapsed = await run_clients(clients, seconds, op)
        cpu = ((cpu_seconds(*pids) if pids else 0.0) - before) / len(latencies) * 1000
        stats = report(name, latencies, elapsed)
        print(f"{'':<34} CPU {cpu:6.2f} ms per request (server + database)")
        return {**stats, "served": served, "cpu": cpu}


def consent_part(args: argparse.Namespace, uri: str, base: str, gp: str, port: int, pids: list[int]) -> None:
    print("\n1. Consent: the GP searches Task?patient=..&_count=20 (audit off)")
    run = asyncio.run
    none: list[dict[str, float]] = []
    five: list[dict[str, float]] = []
    other: list[dict[str, float]] = []
    # Patient A records and withdraws her own Consent (nobody else could: it hides her record).
    patient_a = mint(uri, port, "patient/*.cruds", "Patient/A", patient="A")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {patient_a}"}) as http:
        for _ in range(args.rounds):
            none.append(run(measure(base, gp, args.clients, args.seconds,
                                    "patient A, no Consent", "/Task?patient=A&_count=20", 20, pids)))
            created = http.post("/Consent", json=CONSENT)
            created.raise_for_status()
            consent_id = created.json()["id"]
            five.append(run(measure(base, gp, args.clients, args.seconds,
                                    "patient A, Consent of 5 provisions", "/Task?patient=A&_count=20", 20, pids)))
            other.append(run(measure(base, gp, args.clients, args.seconds,
                                     "patient B (A has the Consent)", "/Task?patient=B&_count=20", 20, pids)))
            total = http.get("/Task?patient=A&_total=accurate&_count=1",
                             headers={"Authorization": f"Bearer {gp}"}).json()["total"]
            http.delete(f"/Consent/{consent_id}").raise_for_status()
    print(f"   restricted Tasks withheld from the GP: {args.tasks - total} of {args.tasks}")
    print(f"   patient A with 5 provisions: {_cost(five, none)}")
    print(f"   patient B (A has the Consent): {_cost(other, none)}")


def _mean(results: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in results) / len(results)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _cost(variant: list[dict[str, float]], baseline: list[dict[str, float]]) -> str:
    """What `variant` costs over `baseline`, round by round (each pair ran back to back):
    CPU per request (server + database; the capacity lost) and throughput (disturbed by any
    other load on the machine), medians over the rounds."""
    cpu = [100 * (v["cpu"] / b["cpu"] - 1) for v, b in zip(variant, baseline, strict=True)]
    rate = [100 * (1 - v["rate"] / b["rate"]) for v, b in zip(variant, baseline, strict=True)]
    return (f"CPU per request {_median(cpu):+.1f}% (rounds {', '.join(f'{c:+.0f}%' for c in cpu)}); "
            f"throughput {_median(rate):+.1f}% (rounds {', '.join(f'{c:+.0f}%' for c in rate)})")


def patient_consent(patient: str) -> dict[str, Any]:
    """A typical clinic Consent: opt-out; a pharmacist denied; restricted data denied."""
    return {
        "resourceType": "Consent", "status": "active", "scope": CONSENT["scope"], "category": CONSENT["category"],
        "patient": ref(f"Patient/{patient}"),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"provision": [
            {"type": "deny", "actor": [actor("Practitioner/pharmacist")]},
            {"type": "deny", "securityLabel": [{"system": CONFIDENTIALITY, "code": "R"}]},
        ]},
    }


def seed_scale(uri: str, database: str, folder: Path, patients: int, tasks: int, consents: bool) -> list[str]:
    """`patients` patients with `tasks` Tasks each (and a Consent each), through `fhir-server load`'s
    write pipeline (NDJSON, many resources per transaction); returns the Task ids."""
    from fhir_server.loader import load_paths

    folder.mkdir(parents=True, exist_ok=True)
    task_ids = [f"t{n}-{k}" for n in range(patients) for k in range(tasks)]
    lines = [orjson.dumps({"resourceType": "Practitioner", "id": "gp"})]
    for n in range(patients):
        lines.append(orjson.dumps({"resourceType": "Patient", "id": f"p{n}"}))
        for k in range(tasks):
            lines.append(orjson.dumps({"resourceType": "Task", "id": f"t{n}-{k}", "status": "requested",
                                       "intent": "order", "for": ref(f"Patient/p{n}"),
                                       "owner": ref("Practitioner/gp")}))
        if consents:
            lines.append(orjson.dumps({**patient_consent(f"p{n}"), "id": f"c{n}"}))
    (folder / "seed.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings(mongodb_uri=uri, database=database, auth_enabled=True, data_dir=folder,
                        base_url="http://127.0.0.1:8080/fhir")
    os.environ.update({"FHIR_AUDIT": "off", "FHIR_PROVENANCE": "off"})
    for attempt in range(3):
        # Loading is idempotent (every resource has its id): a failed run is simply rerun.
        try:
            summary = asyncio.run(load_paths(settings, [folder]))
            if not summary.failed:
                break
            print(f"   load attempt {attempt + 1}: {summary.failed} failed ({summary.failures[0][1][:200]})")
        except PyMongoError as exc:
            print(f"   load attempt {attempt + 1} failed: {str(exc)[:200]}")
    return task_ids


def scale_part(args: argparse.Namespace) -> None:
    print(f"\n3. Consent at scale: {args.patients} patients, {args.tasks_per_patient} Task(s) each; every patient holding a Consent "
          "vs none (two databases, one process each)")
    run = asyncio.run
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        variants = {"none": (18190, "bench_scale_none"), "consents": (18191, "bench_scale_consents")}
        servers = {name: start_server(db.uri, port, Path(tmp) / str(port), database, FHIR_CONSENT="on",
                                      FHIR_AUDIT="off")
                   for name, (port, database) in variants.items()}
        database_pid = db._process.pid if db._process else os.getpid()
        try:
            bases = {name: f"http://127.0.0.1:{port}/fhir" for name, (port, _) in variants.items()}
            for base in bases.values():
                wait_up(base)
            gp = {name: mint(db.uri, port, "user/*.rs", "Practitioner/gp", database=database)
                  for name, (port, database) in variants.items()}
            tasks: dict[str, list[str]] = {}
            for name, (_port, database) in variants.items():
                started = time.perf_counter()
                tasks[name] = seed_scale(db.uri, database, Path(tmp) / f"seed-{name}", args.patients,
                                         args.tasks_per_patient, consents=name == "consents")
                print(f"   seeded {name}: {len(tasks[name])} Tasks in {time.perf_counter() - started:.0f} s")
            # The Consents' change events of the seeding are read by every request for a few
            # seconds (the cache's late-commit window): measure the steady state.
            time.sleep(GRACE_SECONDS + 1)
            rng = random.Random(7)
            patients = [f"/Task?patient=p{rng.randrange(args.patients)}&_count=10" for _ in range(2000)]
            worklist = "/Task?owner=Practitioner/gp&status=requested&_count=10"
            results: dict[tuple[str, str], list[dict[str, float]]] = {}
            for round_ in range(args.rounds):
                print(f"   round {round_ + 1}")
                for kind, paths, expect in (("read", None, None), ("search", patients, args.tasks_per_patient),
                                            ("worklist", [worklist], 10)):
                    for name in (("none", "consents") if round_ % 2 == 0 else ("consents", "none")):
                        wanted = paths or [f"/Task/{i}" for i in rng.sample(tasks[name], min(2000, len(tasks[name])))]
                        results.setdefault((kind, name), []).append(run(measure(
                            bases[name], gp[name], args.clients, args.seconds, f"{kind}, {name}", wanted,
                            expect, [servers[name].pid, database_pid])))
            for kind in ("read", "search", "worklist"):
                print(f"   {kind}: every patient with a Consent vs none: "
                      f"{_cost(results[(kind, 'consents')], results[(kind, 'none')])}")
                print(f"   {'':<8} CPU per request: none {_mean(results[(kind, 'none')], 'cpu'):.2f} ms, "
                      f"consents {_mean(results[(kind, 'consents')], 'cpu'):.2f} ms; p50 none "
                      f"{_mean(results[(kind, 'none')], 'p50'):.1f} ms, consents "
                      f"{_mean(results[(kind, 'consents')], 'p50'):.1f} ms")
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of each comparison")
    parser.add_argument("--tasks", type=int, default=200, help="Tasks per patient")
    parser.add_argument("--flush-ms", default="", help="FHIR_AUDIT_FLUSH_MS of the audited server")
    parser.add_argument("--part", choices=("consent", "audit", "both", "scale"), default="both")
    parser.add_argument("--patients", type=int, default=10_000, help="patients of --part scale")
    parser.add_argument("--tasks-per-patient", type=int, default=1, help="Tasks per patient of --part scale")
    args = parser.parse_args()
    if args.part == "scale":
        print(f"cores: {os.cpu_count()}  clients: {args.clients}  seconds per measurement: {args.seconds}  "
              f"rounds: {args.rounds}")
        scale_part(args)
        return
    print(f"cores: {os.cpu_count()}  clients: {args.clients}  seconds per measurement: {args.seconds}  "
          f"rounds: {args.rounds}  Tasks per patient: {args.tasks}")
    run = asyncio.run
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        # (Consent, audit) per server.
        ports = {(False, False): 18180, (True, False): 18181, (True, True): 18182}
        flush = {"FHIR_AUDIT_FLUSH_MS": args.flush_ms} if args.flush_ms else {}
        servers = [start_server(db.uri, port, Path(tmp) / str(port), FHIR_CONSENT="on" if consent else "off",
                                FHIR_AUDIT="on" if audit else "off", **flush)
                   for (consent, audit), port in ports.items()]
        pids = {key: server.pid for key, server in zip(ports, servers, strict=True)}
        database_pid = db._process.pid if db._process else os.getpid()  # the SecantusDB child
        mongo: MongoClient[dict[str, Any]] = MongoClient(db.uri)
        try:
            bases = {key: f"http://127.0.0.1:{port}/fhir" for key, port in ports.items()}
            for base in bases.values():
                wait_up(base)
            gp = {key: mint(db.uri, port, "user/*.rs", "Practitioner/gp") for key, port in ports.items()}
            plain = (True, False)
            admin = mint(db.uri, ports[plain], "system/*.cruds")
            ids = seed(bases[plain], admin, args.tasks)

            if args.part != "audit":
                consent_part(args, db.uri, bases[plain], gp[plain], ports[plain], [pids[plain], database_pid])
            if args.part == "consent":
                return
            print("\n2. Audit (and Consent's fixed cost): the GP reads GET /Task/{id}, no Consent stored")
            reads = [f"/Task/{i}" for i in ids["B"]]
            before = mongo[DATABASE]["AuditEvent"].count_documents({"sp.subtype": "read"})
            results: dict[tuple[bool, bool], list[dict[str, float]]] = {key: [] for key in ports}
            for _ in range(args.rounds):
                for key in ports:
                    label = f"consent {'on' if key[0] else 'off'}, audit {'on' if key[1] else 'off'}"
                    results[key].append(run(measure(bases[key], gp[key], args.clients, args.seconds, label, reads,
                                                    pids=[pids[key], database_pid])))
            print(f"   audit on: {_cost(results[(True, True)], results[plain])}")
            print(f"   Consent enforcement on, no Consent stored: {_cost(results[plain], results[(False, False)])}")
        finally:
            for server in servers:
                server.terminate()
                server.wait(60)
        served = sum(int(r["served"]) for r in results[(True, True)])
        stored = mongo[DATABASE]["AuditEvent"].count_documents({"sp.subtype": "read"}) - before
        print(f"   reads served by the audited server: {served}; read AuditEvents stored: {stored}")
        mongo.close()


if __name__ == "__main__":
    main()
