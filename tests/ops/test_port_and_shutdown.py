"""A taken port ends `serve` at once; SIGTERM ends it within 5 s, idle or under load."""

from __future__ import annotations

import threading
import time

import httpx

from tests.ops.conftest import ServeProcess

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def test_second_server_on_a_taken_port_exits_at_once(serve: type[ServeProcess]) -> None:
    first = serve()
    first.wait_ready()
    second = serve(port=first.port)
    code = second.process.wait(60)
    elapsed = time.monotonic() - second.started_at
    assert code == 2
    log = second.log()
    assert f"127.0.0.1:{first.port}" in log
    assert "FHIR_PORT" in log and "--port" in log
    # It refused before starting anything: no embedded database was started for it.
    assert not (second.data_dir / "db").exists()
    assert elapsed < 20, elapsed  # today it never exits
    # The first server is unaffected.
    assert httpx.get(f"{first.base}/health/ready", timeout=5).status_code == 200


def test_sigterm_when_idle_exits_within_5_s(serve: type[ServeProcess]) -> None:
    server = serve()
    server.wait_ready()
    db_pid = server.database_pid()
    seconds = server.terminate()
    assert server.process.returncode == 0, server.log()
    assert seconds < 5, seconds
    assert not _alive(db_pid)


def test_sigterm_under_load_exits_within_5_s(serve: type[ServeProcess]) -> None:
    server = serve()
    server.wait_ready()
    stop = threading.Event()
    statuses: list[int] = []

    def write() -> None:
        with httpx.Client(base_url=server.fhir, timeout=10) as http:
            while not stop.is_set():
                try:
                    statuses.append(http.post("/Task", json=TASK).status_code)
                except httpx.HTTPError:
                    return  # the server went away: expected

    writers = [threading.Thread(target=write) for _ in range(6)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 60
    while len(statuses) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(statuses) >= 20
    seconds = server.terminate()
    stop.set()
    for w in writers:
        w.join(15)
    assert seconds < 5, seconds
    assert server.process.returncode == 0, server.log()
    assert 500 not in statuses


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
