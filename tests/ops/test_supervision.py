"""The embedded database is supervised: killed under load, it is restarted; meanwhile data
requests are answered 503 with Retry-After; no acknowledged write is lost; when it cannot be
restarted the server exits non-zero."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Any

import httpx

from tests.ops.conftest import ServeProcess

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_database_killed_under_load_503_then_recovery_without_lost_writes(serve: type[ServeProcess]) -> None:
    server = serve(env={"FHIR_DATABASE_TIMEOUT": "1"})
    server.wait_ready()
    stop = threading.Event()
    lock = threading.Lock()
    replies: list[tuple[float, str, httpx.Response]] = []

    def load(worker: int) -> None:
        with httpx.Client(base_url=server.fhir, timeout=150) as http:
            while not stop.is_set():
                try:
                    if worker % 2:
                        reply = http.post("/Task", json=TASK)
                        kind = "write"
                    else:
                        reply = http.get("/Task", params={"_count": "1"})
                        kind = "read"
                except httpx.HTTPError as exc:
                    raise AssertionError(f"connection failed: {exc}") from exc
                with lock:
                    replies.append((time.monotonic(), kind, reply))

    workers = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(6)]
    for w in workers:
        w.start()
    _until(lambda: sum(r.status_code == 201 for _, _, r in replies) >= 20, 60, "20 writes")

    killed_at = time.monotonic()
    os.kill(server.database_pid(), signal.SIGKILL)
    ready_during = None
    _until(lambda: any(r.status_code == 503 for _, _, r in replies), 30, "a 503")
    ready_during = httpx.get(f"{server.base}/health/ready", timeout=10)
    # Recovery: 20 more writes acknowledged after the kill (and after the first 503).
    _until(lambda: sum(r.status_code == 201 and t > killed_at + 0.5 for t, _, r in replies) >= 20,
           90, "writes after the restart")
    stop.set()
    for w in workers:
        w.join(160)

    statuses = {r.status_code for _, _, r in replies}
    assert statuses <= {200, 201, 503}, statuses
    unavailable = [r for _, _, r in replies if r.status_code == 503]
    for reply in unavailable:
        assert reply.headers["retry-after"].isdigit()
        outcome = reply.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "transient"
    # While it restarted the server said it was not ready (or had already recovered).
    assert ready_during is not None and ready_during.status_code in (200, 503)
    log = server.log()
    assert "killed by SIGKILL" in log
    assert "restarting the embedded database" in log
    assert "embedded database restarted" in log
    assert httpx.get(f"{server.base}/health/ready", timeout=10).status_code == 200

    # Every acknowledged create is readable after the recovery.
    created = [r.json()["id"] for _, kind, r in replies if kind == "write" and r.status_code == 201]
    with httpx.Client(base_url=server.fhir, timeout=30) as http:
        missing = [i for i in created if http.get(f"/Task/{i}").status_code != 200]
    assert not missing, f"{len(missing)} of {len(created)} acknowledged writes lost"


def test_ready_reports_the_restart(serve: type[ServeProcess]) -> None:
    server = serve()
    server.wait_ready()
    assert httpx.get(f"{server.base}/health/live").json() == {"status": "pass"}
    ready = httpx.get(f"{server.base}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "pass", "indexes": "pass", "dispatcher": "pass"}
    os.kill(server.database_pid(), signal.SIGKILL)
    _until(lambda: httpx.get(f"{server.base}/health/ready", timeout=10).status_code == 503, 10, "not ready")
    not_ready = httpx.get(f"{server.base}/health/ready", timeout=10)
    if not_ready.status_code == 503:  # it may already be back
        assert not_ready.json()["checks"]["database"] != "pass"
        assert not_ready.headers["retry-after"].isdigit()
    # Data requests are refused at once while it restarts; discovery stays up.
    assert httpx.get(f"{server.fhir}/metadata", timeout=10).status_code == 200
    assert httpx.get(f"{server.base}/health/live", timeout=10).status_code == 200
    _until(lambda: httpx.get(f"{server.base}/health/ready", timeout=10).status_code == 200, 90, "ready again")


def test_exits_non_zero_when_the_database_cannot_be_restarted(serve: type[ServeProcess]) -> None:
    server = serve()
    server.wait_ready()
    pid = server.database_pid()
    # Its storage replaced by a file before it is killed (the running database keeps its open
    # files), so that no restart, however quick, finds a database: every one fails at start-up.
    storage = server.data_dir / "db"
    shutil.rmtree(storage)
    storage.write_text("not a database")
    os.kill(pid, signal.SIGKILL)
    code = server.process.wait(180)
    log = server.log()
    assert code == 3, log
    assert "embedded database restart failed" in log
    assert "could not be restarted" in log
