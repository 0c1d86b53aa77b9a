"""No acknowledged access goes unrecorded: a server killed (SIGKILL) before it stored its
batch of AuditEvents replays them from its write-ahead log at the next start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings
from fhir_server.services import auth_settings
from fhir_server.storage.audit_batches import BATCHES
from tests.conftest import free_port

DATABASE = "fhir_audit_crash"
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve(mongodb_uri: str, port: int, data_dir: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    environment.update({"FHIR_DATABASE": DATABASE, "PYTHONPATH": str(ROOT), **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--mongodb-uri", mongodb_uri, "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "WARNING"],
        env=environment, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def _token(mongodb_uri: str, port: int) -> str:
    settings = Settings(port=port, base_url=f"http://127.0.0.1:{port}/fhir", mongodb_uri=mongodb_uri,
                        database=DATABASE, auth_enabled=True)

    async def work() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            return await mint_dev_token(client[DATABASE], auth_settings(settings), ["user/*.cruds"],
                                        fhir_user="Practitioner/gray")
        finally:
            await client.close()

    return asyncio.run(work())


def _reads(mongo: MongoClient[dict[str, Any]]) -> int:
    """Read events stored, lone or in the audit writer's batch documents."""
    db = mongo[DATABASE]
    batched = db[BATCHES].aggregate([{"$unwind": "$e"}, {"$match": {"e.sp.subtype": "read"}}, {"$count": "n"}])
    return db["AuditEvent"].count_documents({"sp.subtype": "read"}) + sum(d["n"] for d in batched)


def test_a_killed_server_loses_no_audit_event(mongodb_uri: str, mongo: MongoClient[dict[str, Any]],
                                              tmp_path: Path) -> None:
    mongo.drop_database(DATABASE)
    port = free_port()
    audit_dir = tmp_path / "audit"
    # A batch that would not be stored for ten minutes: only the write-ahead log holds it.
    with serve(mongodb_uri, port, tmp_path, FHIR_AUDIT_DIR=str(audit_dir), FHIR_AUDIT_FLUSH_MS="600000",
               FHIR_AUDIT_BATCH="100000") as process:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}/fhir",
                            headers={"Authorization": f"Bearer {_token(mongodb_uri, port)}"})
        assert http.put("/Patient/anna", json={"resourceType": "Patient", "id": "anna"}).status_code == 201
        for _ in range(25):
            assert http.get("/Patient/anna").status_code == 200
        http.close()
        assert _reads(mongo) == 0
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert sum(len(p.read_bytes().splitlines()) for p in audit_dir.glob("*.wal")) == 25
    # The next start stores them before it serves anything.
    with serve(mongodb_uri, port, tmp_path, FHIR_AUDIT_DIR=str(audit_dir)):
        assert _reads(mongo) == 25
    assert _reads(mongo) == 25
    assert list(audit_dir.glob("*.wal")) == []
    mongo.drop_database(DATABASE)
