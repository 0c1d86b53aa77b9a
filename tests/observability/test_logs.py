"""FHIR_LOG_FORMAT=json: `fhir-server serve` writes one JSON object per log line, and the
lines a request causes carry its request id (the one in X-Request-Id and its AuditEvent)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_json_log_lines_carry_the_request_id(mongodb_uri: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    env.update({"FHIR_DATABASE": "fhir_json_logs", "FHIR_AUTH_DISABLED": "1", "FHIR_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT)})
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--mongodb-uri", mongodb_uri, "--port", str(port),
             "--data-dir", str(tmp_path / "data"), "--access-log"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            reply = httpx.get(f"http://127.0.0.1:{port}/fhir/Task/nope", headers={"X-Request-Id": "log-me-1"})
            assert reply.status_code == 404
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    mine = [r for r in records if r.get("request_id") == "log-me-1"]
    assert mine and any("/fhir/Task/nope" in r["message"] and "404" in r["message"] for r in mine), lines
