"""Two checkouts of the server, same run, interleaved: GET /Task/{id} and POST /Task (as
bench/rest.py measures them) and the 100-entry referral transaction of bench/bundles.py (one
client, sequential) and `fhir-server load` of generated NDJSON (bench/bundles.py's mix, a
fresh database each time; CPU of the loader process), against a baseline checkout and this one.

Both servers run as their own processes on one embedded database (two database names), with
this venv's Python and each checkout first on PYTHONPATH. Rounds alternate baseline and
candidate (ABBA order, so drift over the run falls on both), wrk drives them; the report is
the median rate per side, the candidate/baseline ratio, and server CPU time per request
from /proc (utime + stime of the server process over each measurement).

    git archive <base-commit> | tar -x -C /tmp/base
    .venv/bin/python bench/ab_rest.py --baseline /tmp/base [--rounds 6] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bundles import generate, referral
from bench.measures import cpu_seconds
from bench.rest import TASK, WRK_POST, wait_up, wrk
from fhir_server.embedded_db import EmbeddedDatabase

KINDS = ["read", "create", "transaction"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(checkout: Path, uri: str, port: int, database: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": database, "FHIR_AUTH_DISABLED": "1",
           "PYTHONPATH": str(checkout)}
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def transactions(base: str, count: int) -> dict[str, float]:
    times = []
    with httpx.Client(base_url=base, timeout=120) as http:
        for _ in range(count):
            t0 = time.perf_counter()
            r = http.post("", json=referral(100))
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text[:300]
    median = statistics.median(times)
    print(f"  100-entry transaction x{count}: median {median * 1000:7.1f} ms")
    return {"rate": 1 / median}


def load(checkout: Path, uri: str, source: Path, count: int, database: str) -> tuple[float, float]:
    """(resources/s, loader CPU ms per resource, process start included) of one load."""
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": database, "FHIR_AUTH_DISABLED": "1",
           "PYTHONPATH": str(checkout)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fhir_server", "load", str(source)], env=env, cwd=checkout,
                   capture_output=True, check=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"  load {count} resources: {count / seconds:6.0f} resources/s, {1000 * cpu / count:5.2f} ms CPU each")
    return count / seconds, 1000 * cpu / count


def measure(kind: str, base: str, pid: int, task_id: str, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, server CPU ms per request) of one run (transactions: 1 / median latency)."""
    before = cpu_seconds(pid)
    if kind == "transaction":
        count = max(3, int(seconds))
        result = transactions(base, count)
        return result["rate"], 1000 * (cpu_seconds(pid) - before) / count
    if kind == "read":
        result = wrk(f"  GET  {base[-30:]}", f"{base}/Task/{task_id}", clients, seconds)
    else:
        script = WRK_POST.format(body=orjson.dumps(TASK).decode())
        result = wrk(f"  POST {base[-30:]}", f"{base}/Task", clients, seconds, script)
    spent = cpu_seconds(pid) - before
    return result["rate"], 1000 * spent / max(result["rate"] * seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--load", type=int, default=3000, help="resources per load (0: no load)")
    args = parser.parse_args()
    if args.load:
        KINDS.append("load")
    sides = {"baseline": args.baseline.resolve(), "candidate": args.candidate.resolve()}
    print(f"load average {os.getloadavg()[0]:.1f}; rounds {args.rounds} x {args.seconds:.0f}s, "
          f"{args.clients} connections")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as db:
        servers: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
        try:
            for name, checkout in sides.items():
                port = free_port()
                base = f"http://127.0.0.1:{port}/fhir"
                servers[name] = (start(checkout, db.uri, port, f"ab_{name}"), base, "")
            for name, (proc, base, _) in servers.items():
                wait_up(base)
                task_id = httpx.post(f"{base}/Task", json=TASK, timeout=30).json()["id"]
                servers[name] = (proc, base, task_id)
            source = generate(Path(tmp), args.load) if args.load else Path()
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for n in range(args.rounds):
                order = ["baseline", "candidate"] if n % 2 == 0 else ["candidate", "baseline"]
                for kind in KINDS:
                    for name in order:
                        proc, base, task_id = servers[name]
                        print(f"round {n + 1} {name:<9}", end="")
                        results.setdefault((kind, name), []).append(
                            load(sides[name], db.uri, source, args.load, f"ab_load_{name}_{n}")
                            if kind == "load" else
                            measure(kind, base, proc.pid, task_id, args.clients, args.seconds))
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    print(f"\nload average {os.getloadavg()[0]:.1f}")
    for kind in KINDS:
        base_rate = statistics.median(r for r, _ in results[(kind, "baseline")])
        cand_rate = statistics.median(r for r, _ in results[(kind, "candidate")])
        base_cpu = statistics.median(c for _, c in results[(kind, "baseline")])
        cand_cpu = statistics.median(c for _, c in results[(kind, "candidate")])
        pairs = [c / b for (b, _), (c, _) in zip(results[(kind, "baseline")], results[(kind, "candidate")],
                                                   strict=True)]
        print(f"{kind:<11} baseline {base_rate:7.1f} /s {base_cpu:5.2f} ms CPU each | candidate "
              f"{cand_rate:7.1f} /s {cand_cpu:5.2f} ms CPU each | rate ratio {cand_rate / base_rate:.3f} "
              f"(per-round median {statistics.median(pairs):.3f}), CPU ratio {cand_cpu / base_cpu:.3f}")


if __name__ == "__main__":
    main()
