"""`fhir-server serve` as a real process (its own embedded database in a temporary data
directory, or the session's database), driven over HTTP and signals as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


class ServeProcess:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.base = f"http://127.0.0.1:{self.port}"
        self.fhir = f"{self.base}/fhir"
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        environment = {**os.environ, "FHIR_AUTH_DISABLED": "1", **(env or {})}
        environment.pop("MONGODB_URI", None) if "MONGODB_URI" not in (env or {}) else None
        self._log = self.log_path.open("wb")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--port", str(self.port),
             "--data-dir", str(data_dir), *args],
            env=environment, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve was not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def database_pid(self) -> int:
        """The embedded database child of this server (found in /proc)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid and b"secantusd" in cmdline:
                return int(entry.name)
        raise AssertionError("no embedded database child found")

    def terminate(self) -> float:
        """SIGTERM; returns the seconds until the process was gone."""
        t0 = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve ignored SIGTERM for 30 s:\n{self.log()}") from None
        return time.monotonic() - t0

    def close(self) -> None:
        # SIGTERM first: serve stops its embedded database on the way out (a SIGKILL left the
        # database child running past the test); SIGKILL only if it does not go.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[ServeProcess]]:
    started: list[ServeProcess] = []

    class Tracked(ServeProcess):
        def __init__(self, *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None,
                     port: int | None = None) -> None:
            super().__init__(data_dir or tmp_path / f"data{len(started)}", *args, env=env, port=port)
            started.append(self)

    yield Tracked
    for process in started:
        process.close()
