"""The `fhir-server` command: serve on the embedded database (data survives a restart), load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pymongo import MongoClient

from tests.conftest import EXAMPLES_DIR, free_port

CLI = [sys.executable, "-m", "fhir_server"]


def _serve(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "FHIR_BASE_URL")}
    log = open(data_dir / "serve.log", "ab")  # noqa: SIM115 - closed with the process in _stop
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def _wait_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, Path(process.log.name).read_text()  # type: ignore[attr-defined]
        try:
            if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    process.log.close()  # type: ignore[attr-defined]
    assert code == 0, Path(process.log.name).read_text()  # type: ignore[attr-defined]


def _token(port: int, data_dir: Path, scope: str) -> str:
    """`fhir-server token`, as the README tells a newcomer, against the running server."""
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env["FHIR_DATA_DIR"] = str(data_dir)
    done = subprocess.run([*CLI, "token", "--scope", scope, "--base-url", f"http://127.0.0.1:{port}/fhir"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_serve_embedded_database_survives_restart(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    server = _serve(port, tmp_path)
    try:
        _wait_up(base, server)
        # Auth is on by default: no token, no data.
        assert httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}).status_code == 401
        auth = {"Authorization": f"Bearer {_token(port, tmp_path, 'system/*.cruds')}"}
        created = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "active": True}, headers=auth)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
    finally:
        _stop(server)
    assert (tmp_path / "db").is_dir()
    assert not (tmp_path / "embedded.uri").exists()
    server = _serve(port, tmp_path)
    try:
        _wait_up(base, server)
        # The signing keys live in the database, so a token minted before the restart still works.
        again = httpx.get(f"{base}/Patient/{pid}", headers=auth)
        assert again.status_code == 200
        assert again.json()["active"] is True
    finally:
        _stop(server)


def test_load_examples_is_idempotent(mongodb_uri: str) -> None:
    env = {**os.environ, "MONGODB_URI": mongodb_uri, "FHIR_DATABASE": "load_test"}
    files = [str(EXAMPLES_DIR / n) for n in ("patient-example.json", "task-example1.json",
                                             "bundle-transaction.json", "careteam-example.json")]
    first = subprocess.run([*CLI, "load", *files], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "0 failed" in first.stderr
    with MongoClient(mongodb_uri) as client:
        db = client["load_test"]
        assert db["Patient"].count_documents({"del": False}) >= 1
        assert db["Task"].count_documents({"del": False}) == 1
        before = db["Task_history"].count_documents({})
        second = subprocess.run([*CLI, "load", *files], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        # Resources with ids are unchanged; the bundle's id-less POST entries are created anew.
        assert "0 updated" in second.stderr and "5 unchanged" in second.stderr
        assert db["Task_history"].count_documents({}) == before
        client.drop_database("load_test")
