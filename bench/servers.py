"""Starting `fhir-server serve` for a benchmark, and waiting until it answers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx


def serve(env: dict[str, str], port: int, log: Path, *extra: str, tree: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m fhir_server serve --port PORT --log-level warning EXTRA...` with `env`, its
    output appended to `log`; from `tree` (a checkout, e.g. a baseline) when given."""
    if tree is not None:
        env = {**env, "PYTHONPATH": str(tree)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--log-level", "warning", *extra],
            env=env, cwd=tree, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(base: str, timeout: float = 180, path: str = "/metadata",
               process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `base + path` answers 200 (a server over a loaded database may build indexes first).
    With `process`: stops as soon as it exits, so another program on the port never passes for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server for {base} exited ({process.returncode}): is the port taken?")
        try:
            if httpx.get(f"{base}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{base} did not start")
