"""With MONGODB_URI (nothing to supervise), a database that goes away makes data requests
answer 503 + OperationOutcome + Retry-After within FHIR_DATABASE_TIMEOUT, not hang and 500."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from fhir_server.embedded_db import EmbeddedDatabase
from tests.ops.conftest import ServeProcess


def test_unreachable_mongodb_is_503_with_retry_after(serve: type[ServeProcess], tmp_path: Path) -> None:
    database = EmbeddedDatabase(None)
    database.start()
    try:
        server = serve(env={"MONGODB_URI": database.uri, "FHIR_DATABASE_TIMEOUT": "1", "FHIR_RETRY_AFTER": "7"})
        server.wait_ready()
        assert httpx.get(f"{server.fhir}/Task", timeout=10).status_code == 200
    finally:
        database.stop()
    t0 = time.monotonic()
    reply = httpx.get(f"{server.fhir}/Task", timeout=60)
    elapsed = time.monotonic() - t0
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "7"
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert elapsed < 20, elapsed  # today: a 30 s hang and a 500
    ready = httpx.get(f"{server.base}/health/ready", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert httpx.get(f"{server.base}/health/live", timeout=10).status_code == 200
    assert httpx.get(f"{server.fhir}/metadata", timeout=10).status_code == 200
    assert server.terminate() < 5
