"""REST core benchmark: the default configuration (SMART auth, Consent and audit on) beside
auth off and the raw driver (the floor), in one run, interleaved.

Starts the embedded database and two `fhir-server serve` processes on it (separate database
names): the default configuration, read with a `user/` token; and auth off
(`FHIR_AUTH_DISABLED=1`, so Consent, audit and Provenance are off too). wrk (Debian package
`wrk`; `make bench` installs it) drives each with N connections on loopback; pymongo's async
driver drives the database directly for the floor. Rounds take turns (driver, default, auth
off, for each of read, search, create), so whatever else the machine does falls on every mode
alike. Besides req/s and latency, the CPU time per request of the server process and of the
database process, from /proc (utime + stime over each measurement and a short settle after
it, so the audit writer's batched inserts of that window count; idle CPU, measured first, is
subtracted), which holds up under a noisy machine better than req/s.

    .venv/bin/python bench/rest.py [--clients 16] [--seconds 5] [--rounds 3] [--only read,search,create]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import wait_ready
from fhir_server.embedded_db import EmbeddedDatabase

TASK = {
    "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
    "description": "Call the patient about the cardiology referral",
    "for": {"reference": "Patient/p1"}, "owner": {"reference": "Practitioner/dr1"},
    "authoredOn": "2026-11-01T10:00:00Z",
    "identifier": [{"system": "urn:bench", "value": "t"}],
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
}
TICKS = os.sysconf("SC_CLK_TCK")
SETTLE = 1.0  # seconds after each measurement: the audit writer flushes every 0.5 s
SCOPE = "user/Task.cruds"
USER = "Practitioner/dr1"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def report(name: str, latencies: list[float], seconds: float) -> dict[str, float]:
    rate = len(latencies) / seconds
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    print(f"{name:<34} {rate:>9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   n={len(latencies)}")
    return {"rate": rate, "p50": p50, "p99": p99}


async def run_clients(clients: int, seconds: float, op) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await op(n, i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(clients)))
    return latencies, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Meter:
    """CPU seconds of the server and database processes over one measurement, less idle."""

    def __init__(self, db_pid: int, idle: dict[int, float]) -> None:
        self.db_pid = db_pid
        self.idle = idle  # pid -> idle CPU seconds per second

    def measure(self, server_pid: int | None, run: Callable[[], dict[str, float]]) -> dict[str, float]:
        pids = [p for p in (server_pid, self.db_pid) if p is not None]
        before = {p: cpu_seconds(p) for p in pids}
        t0 = time.perf_counter()
        result = run()
        time.sleep(SETTLE)
        elapsed = time.perf_counter() - t0
        used = {p: max(0.0, cpu_seconds(p) - before[p] - self.idle.get(p, 0.0) * elapsed) for p in pids}
        n = max(1.0, result["count"])
        result["server_ms"] = used[server_pid] / n * 1000 if server_pid is not None else 0.0
        result["db_ms"] = used[self.db_pid] / n * 1000
        return result


def idle_rates(pids: list[int], seconds: float = 3.0) -> dict[int, float]:
    before = {p: cpu_seconds(p) for p in pids}
    time.sleep(seconds)
    return {p: (cpu_seconds(p) - before[p]) / seconds for p in pids}


# ---------------------------------------------------------------- the raw driver (the floor)

class Driver:
    def __init__(self, uri: str, clients: int) -> None:
        self.uri = uri
        self.clients = clients
        self.ids = [uuid.uuid4().hex for _ in range(200)]
        self.doc = {"res": b"x" * 600, "v": 1, "del": False}

    async def _with(self, work: Callable[[AsyncMongoClient[dict[str, Any]]], Any]) -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.uri, maxPoolSize=self.clients)
        try:
            return await work(client)
        finally:
            await client.close()

    def setup(self) -> None:
        async def work(client: AsyncMongoClient[dict[str, Any]]) -> None:
            await client["bench_raw"].t.insert_many([{**self.doc, "_id": i} for i in self.ids])
        asyncio.run(self._with(work))

    def read(self, seconds: float) -> dict[str, float]:
        async def work(client: AsyncMongoClient[dict[str, Any]]) -> dict[str, float]:
            t = client["bench_raw"].t

            async def find(n: int, i: int) -> None:
                await t.find_one({"_id": self.ids[(n * 7919 + i) % len(self.ids)]})
            got = report("driver find-by-id", *await run_clients(self.clients, seconds, find))
            return got
        return self._counted(work)

    def create(self, seconds: float) -> dict[str, float]:
        async def work(client: AsyncMongoClient[dict[str, Any]]) -> dict[str, float]:
            db = client["bench_raw"]

            async def insert(n: int, i: int) -> None:
                key = uuid.uuid4().hex

                async def txn(s: Any) -> None:
                    await db.c.insert_one({**self.doc, "_id": key}, session=s)
                    await db.ch.insert_one({**self.doc, "_id": f"{key}/1"}, session=s)

                # As the server does: with_transaction retries on transient errors.
                async with client.start_session() as s:
                    await s.with_transaction(txn)
            return report("driver insert current+history txn", *await run_clients(self.clients, seconds, insert))
        return self._counted(work)

    def _counted(self, work: Callable[[AsyncMongoClient[dict[str, Any]]], Any]) -> dict[str, float]:
        started = time.perf_counter()
        result: dict[str, float] = asyncio.run(self._with(work))
        result["count"] = result["rate"] * (time.perf_counter() - started)
        return result


# ---------------------------------------------------------------- the server, by wrk

WRK_POST = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Prefer"] = "return=minimal"
"""


def wrk(name: str, url: str, clients: int, seconds: float, script: str | None = None,
        bearer: str | None = None) -> dict[str, float]:
    """Drives the server with wrk (a C load generator): a Python generator on the same two
    cores measured itself more than the server (176 vs 665 req/s for the same GET)."""
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
    lua_text = (script or "") + (f'\nwrk.headers["Authorization"] = "Bearer {bearer}"\n' if bearer else "")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if lua_text:
            lua.write(lua_text)
            lua.flush()
            cmd += ["-s", lua.name]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def ms(pct: str) -> float:
        value, unit = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    suffix = f"   NON-2xx: {errors.group(1)}" if errors else ""
    print(f"{name:<34} {rate:>9.0f} req/s   p50 {ms('50'):6.2f} ms   p99 {ms('99'):6.2f} ms{suffix}")
    return {"rate": rate, "p50": ms("50"), "p99": ms("99"), "count": count,
            "errors": float(errors.group(1)) if errors else 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(uri: str, database: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    env.update({"MONGODB_URI": uri, "FHIR_DATABASE": database, **extra})
    return env


class Server:
    def __init__(self, name: str, uri: str, database: str, data_dir: Path, settings: dict[str, str],
                 checkout: Path | None = None) -> None:
        self.name = name
        self.uri = uri
        self.database = database
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = _env(uri, database, FHIR_DATA_DIR=str(data_dir), FHIR_BASE_URL=self.base, **settings)
        self.cwd = None
        if checkout is not None:  # another checkout's code (a baseline), this venv's libraries
            self.env["PYTHONPATH"] = str(checkout)
            self.cwd = checkout
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bearer: str | None = None
        self.task_id = ""

    def token(self, scope: str, fhir_user: str) -> str:
        """`fhir-server token`, as an operator would mint one, for this server."""
        args = [sys.executable, "-m", "fhir_server", "token", "--scope", scope, "--base-url", self.base,
                "--fhir-user", fhir_user, "--database", self.database]
        done = subprocess.run(args, env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]

    def seed(self) -> None:
        headers = {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}
        with httpx.Client(base_url=self.base, timeout=30, headers=headers) as http:
            r = http.post("/Task", json={**TASK, "identifier": [{"system": "urn:seed", "value": "s1"}]})
            r.raise_for_status()
            self.task_id = r.json()["id"]
            for path in (f"/Task/{self.task_id}", "/Task?identifier=urn:seed|s1"):
                r = http.get(path)
                r.raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def start_server(uri: str, port: int) -> subprocess.Popen[bytes]:
    """An auth-off server (for benches that measure something else than security)."""
    env = {**os.environ, "MONGODB_URI": uri, "FHIR_DATABASE": "bench", "FHIR_AUTH_DISABLED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )





def wait_up(base: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until the server at `base` answers (a loaded machine starts four servers slowly)."""
    wait_ready(base, 240, process=process)

# ---------------------------------------------------------------- the run

def summary(kind: str, results: dict[str, list[dict[str, float]]]) -> None:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print(f"\n{kind}: medians over {len(next(iter(results.values())))} interleaved rounds")
    print(f"  {'mode':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server ms/req':>14} {'db ms/req':>10} {'total':>7}")
    for mode in results:
        total = med(mode, "server_ms") + med(mode, "db_ms")
        print(f"  {mode:<22} {med(mode, 'rate'):>8.0f} {med(mode, 'p50'):>8.2f} {med(mode, 'p99'):>8.2f} "
              f"{med(mode, 'server_ms'):>14.2f} {med(mode, 'db_ms'):>10.2f} {total:>7.2f}")

    def ratio(a: str, b: str, key: str) -> float:
        """Per round a/b, then the median: drift over the run falls on both."""
        pairs = list(zip(results[a], results[b], strict=True))
        if key == "time":  # a round in which a mode answered nothing (an overloaded machine) is left out
            rated = [y["rate"] / x["rate"] for x, y in pairs if x["rate"] > 0]
            return statistics.median(rated) if rated else float("nan")
        return statistics.median((x["server_ms"] + x["db_ms"]) / max(1e-9, y["server_ms"] + y["db_ms"])
                                 for x, y in pairs)

    for prefix in ("", "before: "):
        if f"{prefix}default" in results and f"{prefix}auth off" in results:
            print(f"  {prefix}default / auth off: time per request "
                  f"{ratio(f'{prefix}default', f'{prefix}auth off', 'time'):.2f}x, "
                  f"CPU per request {ratio(f'{prefix}default', f'{prefix}auth off', 'cpu'):.2f}x")
    for mode in ("default", "auth off"):
        if f"before: {mode}" in results:
            print(f"  {mode}, after / before: time per request {ratio(mode, f'before: {mode}', 'time'):.2f}x, "
                  f"CPU per request {ratio(mode, f'before: {mode}', 'cpu'):.2f}x")
    if "driver" in results:
        for mode in ("auth off", "default"):
            if mode in results:
                print(f"  {mode} / driver: time per request {ratio(mode, 'driver', 'time'):.2f}x, "
                      f"database CPU per request "
                      f"{med(mode, 'db_ms') / max(1e-9, med('driver', 'db_ms')):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="read,search,create")
    parser.add_argument("--no-driver", action="store_true")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. `git archive main | tar -x -C "
                        "/tmp/base`): its servers run beside these, same run, as `before: ...`")
    args = parser.parse_args()
    kinds = args.only.split(",")
    print(f"cores: {os.cpu_count()}  clients: {args.clients}  seconds: {args.seconds}  rounds: {args.rounds}  "
          f"load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        assert db._process is not None
        db_pid = db._process.pid
        servers = {
            "default": Server("default", db.uri, "bench_default", Path(tmp) / "default", {}),
            "auth off": Server("auth off", db.uri, "bench_off", Path(tmp) / "off", {"FHIR_AUTH_DISABLED": "1"}),
        }
        if args.baseline:
            servers["before: default"] = Server("before: default", db.uri, "bench_before_default",
                                                Path(tmp) / "before-default", {}, args.baseline)
            servers["before: auth off"] = Server("before: auth off", db.uri, "bench_before_off",
                                                 Path(tmp) / "before-off", {"FHIR_AUTH_DISABLED": "1"}, args.baseline)
        try:
            for server in servers.values():
                wait_up(server.base, server.process)
            for s in servers.values():
                if "default" in s.name:
                    s.bearer = s.token(SCOPE, USER)
            for server in servers.values():
                server.seed()
            driver = None if args.no_driver else Driver(db.uri, args.clients)
            if driver:
                driver.setup()
            meter = Meter(db_pid, idle_rates([db_pid, *(s.process.pid for s in servers.values())]))
            print("idle CPU (subtracted): " + ", ".join(f"{pid}: {rate * 100:.1f}%" for pid, rate in meter.idle.items()))
            results: dict[str, dict[str, list[dict[str, float]]]] = {k: {} for k in kinds}
            post = WRK_POST.format(body=orjson.dumps(TASK).decode())
            for turn in range(args.rounds):
                print(f"-- round {turn + 1}")
                for kind in kinds:
                    if driver and kind in ("read", "create"):
                        run = driver.read if kind == "read" else driver.create
                        results[kind].setdefault("driver", []).append(
                            meter.measure(None, lambda run=run: run(args.seconds)))  # type: ignore[misc]
                    for name, s in servers.items():
                        url, script = {
                            "read": (f"{s.base}/Task/{s.task_id}", None),
                            "search": (f"{s.base}/Task?identifier=urn:seed%7Cs1", None),
                            "create": (f"{s.base}/Task", post),
                        }[kind]
                        results[kind].setdefault(name, []).append(meter.measure(
                            s.process.pid,
                            lambda n=f"{name}: {kind}", u=url, sc=script, b=s.bearer: wrk(  # type: ignore[misc]
                                n, u, args.clients, args.seconds, sc, b)))
            for kind in kinds:
                summary(kind, results[kind])
        finally:
            for server in servers.values():
                server.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
