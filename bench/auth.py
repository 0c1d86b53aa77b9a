"""SMART auth overhead: GET /Task/{id} with bearer-token validation on, beside the same server
with auth off (FHIR_AUTH_DISABLED=1), in one run.

Starts the embedded database and three `fhir-server serve` processes on it, all idle but the
one being measured: auth off; auth on with only SMART (token validation and scopes: Consent,
AuditEvent and Provenance recording off, which auth on otherwise switches on); and auth on
with everything on by default, for reference. Seeds Tasks and mints tokens with
`fhir-server token`. Then N concurrent clients read by id, the modes taking turns in short
slices (round-robin, many times), so that whatever else the machine is doing falls on every
mode alike; each mode's figures are over all its slices.

Last, the validator alone, in this process: what checking a token costs the first time
(signature, claims) and every later time (cache hit + revocation check).

    .venv/bin/python bench/auth.py [--clients 16] [--slices 12] [--slice-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import TASK, report, run_clients, wait_up
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.tokens import TokenValidator, mint_access_token
from fhir_server.config import Settings
from fhir_server.embedded_db import EmbeddedDatabase

DATABASE = "bench_auth"
# The server processes: auth off; SMART alone; SMART with Consent and audit (the default).
AUTH_OFF = {"FHIR_AUTH_DISABLED": "1"}
SMART_ONLY = {"FHIR_CONSENT": "off", "FHIR_AUDIT": "off", "FHIR_PROVENANCE": "off"}
DEFAULTS: dict[str, str] = {}


def _env(uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    env.update({"MONGODB_URI": uri, "FHIR_DATABASE": DATABASE, **extra})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(uri: str, port: int, settings: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
        env=_env(uri, FHIR_DATA_DIR=str(data_dir), **settings),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def token(uri: str, base: str, scope: str, patient: str | None = None) -> str:
    """`fhir-server token`, as an operator would mint one, for the server at `base`."""
    args = [sys.executable, "-m", "fhir_server", "token", "--scope", scope, "--base-url", base]
    if patient:
        args += ["--patient", patient]
    done = subprocess.run(args, env=_env(uri), capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


async def seed(base: str, n: int = 200) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        ids = []
        for _ in range(n):
            r = await http.post("/Task", json=TASK)
            r.raise_for_status()
            ids.append(r.json()["id"])
        return ids


async def interleaved(modes: list[tuple[str, str, str | None]], ids: list[str], clients: int,
                      slices: int, slice_seconds: float) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    https = [httpx.AsyncClient(base_url=base, limits=limits, timeout=30,
                               headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
             for _, base, bearer in modes]
    latencies: list[list[float]] = [[] for _ in modes]
    elapsed = [0.0 for _ in modes]
    try:
        for turn in range(slices + 1):
            for m, http in enumerate(https):

                async def read(n: int, i: int, http: httpx.AsyncClient = http) -> None:
                    r = await http.get(f"/Task/{ids[(n * 7919 + i) % len(ids)]}")
                    assert r.status_code == 200, r.text

                got, seconds = await run_clients(clients, slice_seconds, read)
                if turn:  # the first turn warms pools and caches up
                    latencies[m] += got
                    elapsed[m] += seconds
    finally:
        for http in https:
            await http.aclose()
    print(f"\nGET /Task/{{id}}, {clients} clients, {slices} slices of {slice_seconds:g} s per mode, interleaved:")
    results = [report(name, latencies[m], elapsed[m]) for m, (name, _, _) in enumerate(modes)]
    off = results[0]
    for (name, _, _), result in zip(modes[1:], results[1:], strict=True):
        print(f"  {name}: {(off['rate'] / result['rate'] - 1) * 100:+.1f}% time per request, "
              f"p50 {result['p50'] - off['p50']:+.2f} ms, p99 {result['p99'] - off['p99']:+.2f} ms vs auth off")


async def validator_costs(uri: str, base: str, n: int = 300) -> None:
    """The validator on its own: first check of a token vs a later one (cached)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[DATABASE]
        settings = AuthSettings.from_env(Settings(base_url=base))
        validator = TokenValidator(settings, db)
        tokens = [(await mint_access_token(validator.keys, settings, client_id="bench",
                                           scopes=["user/Task.rs"]))[0] for _ in range(n)]
        await validator.validate(tokens[0])  # loads the key set and the revocation list
        started = time.perf_counter()
        for t in tokens[1:]:
            await validator.validate(t)
        first = (time.perf_counter() - started) / (n - 1)
        started = time.perf_counter()
        for _ in range(5):
            for t in tokens:
                await validator.validate(t)
        again = (time.perf_counter() - started) / (5 * n)
        print(f"\ntoken validation in-process: first use {first * 1e6:.0f} µs (RS256 signature, claims), "
              f"later uses {again * 1e6:.1f} µs (cache hit + revocation check)")
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--slice-seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    ports = {name: free_port() for name in ("off", "smart", "full")}
    bases = {name: f"http://127.0.0.1:{port}/fhir" for name, port in ports.items()}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as db:
        servers = [serve(db.uri, ports[name], settings, Path(tmp) / name)
                   for name, settings in (("off", AUTH_OFF), ("smart", SMART_ONLY), ("full", DEFAULTS))]
        try:
            for server, base in zip(servers, bases.values(), strict=True):
                wait_up(base)
                if server.poll() is not None:
                    raise SystemExit(f"the server for {base} exited")
            ids = asyncio.run(seed(bases["off"]))
            modes: list[tuple[str, str, str | None]] = [
                ("auth off", bases["off"], None),
                ("SMART, user/Task.rs", bases["smart"], token(db.uri, bases["smart"], "user/Task.rs")),
                # Every seeded Task is for Patient/p1: the compartment filter lets them all through.
                ("SMART, patient/Task.rs", bases["smart"],
                 token(db.uri, bases["smart"], "patient/Task.rs", patient="p1")),
                ("SMART+Consent+audit", bases["full"], token(db.uri, bases["full"], "user/Task.rs")),
            ]
            asyncio.run(interleaved(modes, ids, args.clients, args.slices, args.slice_seconds))
        finally:
            for server in servers:
                server.terminate()
                server.wait(30)
        asyncio.run(validator_costs(db.uri, bases["smart"]))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
