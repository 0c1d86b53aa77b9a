"""Workers benchmark: GET by id from `serve --workers 1` and `serve --workers 2`, same run.

Both servers run at once on one embedded database (each `serve` is started with MONGODB_URI,
so neither owns it); wrk (a C load generator, Debian package `wrk`) drives one after the
other, interleaved over repetitions, and the ratio of their throughput is printed with the
CPU per request (server processes + database, from /proc). On this machine's 2 cores the
load generator and the database share the cores with the workers: the ratio says what a
second process buys here, not on a bigger machine (docs/scaling.md).

    .venv/bin/python bench/workers.py [--workers 2] [--clients 16] [--seconds 10]
        [--repetitions 3] [--quick] [--auth]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds
from bench.servers import serve, wait_ready
from fhir_server.embedded_db import EmbeddedDatabase


def descendants(pid: int) -> list[int]:
    """pid and every process below it (the workers of a `serve --workers N`)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        out += frontier
    return out


def children_cpu() -> float:
    """User + system CPU of this process's waited-for children (wrk runs to its end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(url: str, clients: int, seconds: float, bearer: str | None = None) -> dict[str, float]:
    headers = ["-H", f"Authorization: Bearer {bearer}"] if bearer else []
    out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--latency",
                          "--timeout", "30s", *headers, url], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not found or not total or errors or not int(total.group(1)):
        raise SystemExit(f"wrk failed or saw errors:\n{out}")

    def ms(pct: str) -> float:
        match = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s)", out)
        assert match
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    return {"rate": float(found.group(1)), "n": float(total.group(1)), "p50": ms("50"),
            "p99": ms("99")}


SCOPE = "user/Task.cruds"
USER = "Practitioner/dr1"


def server_env(uri: str, port: int, auth: bool, data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": "bench_workers",
           "FHIR_BASE_URL": f"http://127.0.0.1:{port}/fhir", "FHIR_DATA_DIR": str(data_dir)}
    if not auth:
        env["FHIR_AUTH_DISABLED"] = "1"
    return env


def token(env: dict[str, str]) -> str:
    """`fhir-server token`, as an operator would mint one, for the server of `env`."""
    done = subprocess.run(
        [sys.executable, "-m", "fhir_server", "token", "--scope", SCOPE, "--base-url",
         env["FHIR_BASE_URL"], "--fhir-user", USER, "--database", env["FHIR_DATABASE"]],
        env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--port", type=int, default=18460)
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 3 s")
    parser.add_argument("--auth", action="store_true",
                        help="the default configuration (SMART, Consent, audit on), a user/ token")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repetitions = 3, 2
    print(f"cores: {os.cpu_count()}  clients: {args.clients}  seconds: {args.seconds}  "
          f"repetitions: {args.repetitions} (interleaved)")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        counts = {1: args.port, args.workers: args.port + 1}
        envs = {n: server_env(db.uri, port, args.auth, Path(tmp) / f"data{n}")
                for n, port in counts.items()}
        servers = {n: serve(envs[n], port, Path(tmp) / f"serve{n}.log", "--workers", str(n))
                   for n, port in counts.items()}
        db_pid = db._process.pid if db._process else 0
        try:
            for port in counts.values():
                wait_ready(f"http://127.0.0.1:{port}", path="/health/ready")
            bearers = {n: token(envs[n]) if args.auth else None for n in counts}
            created = httpx.post(f"http://127.0.0.1:{args.port}/fhir/Task", json={
                "resourceType": "Task", "status": "requested", "intent": "order",
                "for": {"reference": "Patient/p1"}, "owner": {"reference": USER}},
                headers={"Authorization": f"Bearer {bearers[1]}"} if args.auth else {},
                timeout=30)
            created.raise_for_status()
            print("configuration: " + ("default (SMART + Consent + audit on)" if args.auth
                                       else "auth off"))
            rid = created.json()["id"]
            rows: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
            print("  load average before: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
            for _ in range(args.repetitions):
                for n, port in counts.items():
                    workers = descendants(servers[n].pid)
                    server0, db0 = cpu_seconds(*workers), cpu_seconds(db_pid)
                    client0 = children_cpu()
                    row = wrk(f"http://127.0.0.1:{port}/fhir/Task/{rid}", args.clients,
                              args.seconds, bearers[n])
                    row["server_ms"] = (cpu_seconds(*workers) - server0) / row["n"] * 1000
                    row["db_ms"] = (cpu_seconds(db_pid) - db0) / row["n"] * 1000
                    row["client_ms"] = (children_cpu() - client0) / row["n"] * 1000
                    row["cpu_ms"] = row["server_ms"] + row["db_ms"]
                    rows[n].append(row)
            print("  load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
            cores = os.cpu_count() or 1
            for n, measured in rows.items():
                rate = statistics.median(r["rate"] for r in measured)

                def med(key: str, measured: list[dict[str, float]] = measured) -> float:
                    return statistics.median(r[key] for r in measured)

                print(f"GET /Task/{{id}}, --workers {n}: {rate:8.0f} req/s (median of "
                      f"{len(measured)})  p50 {med('p50'):6.2f} ms  p99 {med('p99'):6.2f} ms  "
                      f"CPU per request: server {med('server_ms'):.2f} + database "
                      f"{med('db_ms'):.2f} + client (wrk) {med('client_ms'):.2f} ms")
                # What the cores allow on an otherwise idle machine: N server processes can
                # use at most N cores (and the database one), and everything together at most
                # every core.
                total = med("server_ms") + med("db_ms") + med("client_ms")
                bound = min(min(n, cores) / med("server_ms"), 1 / med("db_ms"),
                            cores / total) * 1000
                print(f"{'':<30} bound by the cores on an idle machine: {bound:8.0f} req/s")
            one, many = (statistics.median(r["rate"] for r in rows[n]) for n in counts)
            ratios = [b["rate"] / a["rate"] for a, b in zip(*rows.values(), strict=True)]
            print(f"--workers {args.workers} / --workers 1 throughput: {many / one:.2f}x "
                  f"(per repetition: {', '.join(f'{r:.2f}' for r in ratios)})")
        finally:
            for process in servers.values():
                process.send_signal(signal.SIGTERM)
            for process in servers.values():
                process.wait(30)


if __name__ == "__main__":
    main()
