"""`python -m fhir_server serve` as a real process on a database that outlives it (the
session's embedded database): for the tests that SIGKILL a server, restart it, or run two.

A process whose start-up times out stops itself before the test fails: a server left
running keeps polling the shared database for the rest of the session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LEASE_TTL = 1.5
# A bound on start-up, not a speed claim: a loaded 2-core machine takes tens of seconds.
STARTUP_TIMEOUT = 120.0


class ServerProcess:
    def __init__(self, mongodb_uri: str, database: str, port: int,
                 startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.port = port
        env = {**os.environ, "MONGODB_URI": mongodb_uri, "FHIR_DATABASE": database, "FHIR_AUTH_DISABLED": "1",
               "FHIR_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1", "FHIR_SUBSCRIPTION_LEASE_TTL": str(LEASE_TTL),
               "FHIR_SUBSCRIPTION_SCAN_INTERVAL": "0.2", "FHIR_SUBSCRIPTION_POLL_INTERVAL": "0.3",
               "FHIR_SUBSCRIPTION_RETRY_INITIAL": "0.05", "FHIR_SUBSCRIPTION_RETRY_MAX": "0.3",
               "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + startup_timeout
        while not self._up():
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server process was not up within {startup_timeout}s")
            time.sleep(0.1)

    def _up(self) -> bool:
        assert self.process.poll() is None, "the server process exited"
        try:
            return httpx.get(f"{self.base_url}/metadata", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
