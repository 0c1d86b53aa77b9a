"""A database that stalls for longer than FHIR_DATABASE_TIMEOUT while requests are in flight
(a loaded machine: its threads starved, so the driver's heartbeat arrives late) delays those
requests; it fails none of them. Only a database that is gone is answered 503
(test_unreachable_database.py)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from fhir_server.embedded_db import EmbeddedDatabase
from tests.conftest import RunningServer, make_settings

# The server's database_timeout here (the default is 2 s), and a stall well past it. Before, the
# driver gave up on the database once a heartbeat was `database_timeout` late, cancelled every
# operation in flight ("operation cancelled", a ConnectionFailure) and they answered 503 — what
# 2 of 16 concurrent `$join`s met in a loaded CI run.
TIMEOUT = 0.5
STALL = 3.0


def _database_pid(port: int) -> int:
    """The SecantusDB child of this process serving `port`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"secantusd" in part for part in cmdline) and str(port).encode() in cmdline:
            return int(entry.name)
    raise AssertionError(f"no database process on port {port}")


def test_a_database_stalled_past_the_timeout_delays_requests_in_flight_and_fails_none() -> None:
    with EmbeddedDatabase(None) as database:
        pid = _database_pid(database.port)
        # Heartbeats every 0.5 s (not 10 s): the stall is sure to make one late.
        settings = make_settings(f"{database.uri}&heartbeatFrequencyMS=500", database="fhir_stall",
                                 database_timeout=TIMEOUT)
        with RunningServer(settings), httpx.Client(base_url=settings.base_url, timeout=60) as http:
            ids = [http.post("/Patient", json={"resourceType": "Patient"}).json()["id"] for _ in range(4)]

            def request(n: int) -> httpx.Response:
                if n % 2:
                    return http.post("/Patient", json={"resourceType": "Patient"})
                return http.get(f"/Patient/{ids[n % 4]}")

            os.kill(pid, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(16) as pool:
                    futures = [pool.submit(request, n) for n in range(16)]
                    # The stall itself (the condition under test), not a wait for an outcome.
                    time.sleep(STALL)
                    os.kill(pid, signal.SIGCONT)
                    answers = [f.result() for f in futures]
            finally:
                os.kill(pid, signal.SIGCONT)
            assert [a.status_code for a in answers] == [200, 201] * 8, [a.text[:200] for a in answers]
            total = http.get("/Patient", params={"_summary": "count", "_total": "accurate"}).json()["total"]
            assert total == 4 + 8
