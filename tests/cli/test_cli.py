"""The `fhir-server` command: serve on the embedded database (data survives a restart), load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

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


def _write_inputs(folder: Path) -> None:
    folder.mkdir()
    tasks = [{"resourceType": "Task", "id": f"t{n}", "status": "requested", "intent": "order"} for n in range(3)]
    (folder / "tasks.ndjson").write_text("\n".join(json.dumps(t) for t in tasks) + "\n")
    referral = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa",
         "resource": {"resourceType": "Patient", "id": "ref-p"},
         "request": {"method": "PUT", "url": "Patient/ref-p"}},
        {"resource": {"resourceType": "CarePlan", "id": "ref-cp", "status": "active", "intent": "plan",
                      "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000aa"}},
         "request": {"method": "PUT", "url": "CarePlan/ref-cp"}},
    ]}
    (folder / "referral.json").write_text(json.dumps(referral))
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": json.loads((EXAMPLES_DIR / "practitioner-example.json").read_text())},
        {"resource": {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}}},
    ]}
    (folder / "collection.json").write_text(json.dumps(collection))


@pytest.fixture
def load_db(mongodb_uri: str) -> Iterator[Database[dict[str, Any]]]:
    with MongoClient(mongodb_uri) as client:
        client.drop_database("load_test")
        yield client["load_test"]
        client.drop_database("load_test")


def _load(mongodb_uri: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGODB_URI": mongodb_uri, "FHIR_DATABASE": "load_test"}
    return subprocess.run([*CLI, "load", *map(str, paths)], env=env, capture_output=True, text=True, timeout=120)


def test_load_files_bundles_ndjson_idempotently(
    mongodb_uri: str, load_db: Database[dict[str, Any]], tmp_path: Path
) -> None:
    _write_inputs(tmp_path / "in")
    first = _load(mongodb_uri, tmp_path / "in")
    assert first.returncode == 0, first.stderr
    # 3 NDJSON tasks + 2 transaction entries + 1 practitioner; the DiagnosticReport is not stored.
    assert "6 created" in first.stderr and "1 skipped" in first.stderr and "0 failed" in first.stderr
    assert load_db["Task"].count_documents({"del": False}) == 3
    care_plan = json.loads(load_db["CarePlan"].find_one({"_id": "ref-cp"})["res"])
    assert care_plan["subject"]["reference"] == "Patient/ref-p"  # urn:uuid rewritten
    histories = {name: load_db[name].count_documents({}) for name in load_db.list_collection_names()
                 if name.endswith("_history")}
    second = _load(mongodb_uri, tmp_path / "in")
    assert second.returncode == 0, second.stderr
    # The transaction's PUTs that changed nothing count as unchanged too, not updated.
    assert "0 created + 0 updated + 6 unchanged + 0 failed" in second.stderr
    # Loading again wrote no new version of anything.
    assert {name: load_db[name].count_documents({}) for name in histories} == histories


def test_load_reports_failures(mongodb_uri: str, load_db: Database[dict[str, Any]], tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Task", "status": "nope", "intent": "order"}\n{not json\n')
    transaction = tmp_path / "transaction.json"
    transaction.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "tp"}, "request": {"method": "PUT", "url": "Patient/tp"}},
        {"resource": {"resourceType": "Task", "status": "nope", "intent": "order"},
         "request": {"method": "POST", "url": "Task"}},
    ]}))
    done = _load(mongodb_uri, bad, transaction)
    assert done.returncode == 1
    assert "bad.ndjson:2: unreadable" in done.stderr
    assert "transaction.json: transaction failed, nothing written" in done.stderr
    # Every resource read is counted once: the bad Task line, the unreadable line, both entries.
    assert "read 4 resources" in done.stderr and "0 created + 0 updated + 0 unchanged + 4 failed" in done.stderr
    # A transaction holding a type this server does not store is skipped whole, not failed.
    skipped = _load(mongodb_uri, EXAMPLES_DIR / "bundle-transaction.json")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 10: in a transaction holding types not stored by this server" in skipped.stderr
    assert load_db["Patient"].count_documents({}) == 0
    assert load_db["Task"].count_documents({}) == 0
