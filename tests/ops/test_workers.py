"""`serve --workers N`: N processes on one socket and one database, correct across them."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.ops.conftest import ServeProcess
from tests.subscriptions.conftest import wait_until


def children(pid: int) -> dict[int, bytes]:
    """pid -> command line of the live children of `pid`."""
    out: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = cmdline
    return out


def workers(server: ServeProcess) -> list[int]:
    return sorted(p for p, cmd in children(server.process.pid).items()
                  if b"spawn_main" in cmd and b"resource_tracker" not in cmd)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_two_workers_share_the_socket_and_the_database(serve: type[ServeProcess]) -> None:
    server = serve("--workers", "2")
    server.wait_ready()
    pids = wait_until(lambda: len(workers(server)) == 2 and workers(server),
                      what="two worker processes")
    # Both answer: connections spread over the processes accepting on the one socket.
    before = {p: cpu_ticks(p) for p in pids}
    created = httpx.post(f"{server.fhir}/Task", json={
        "resourceType": "Task", "status": "requested", "intent": "order"}, timeout=30)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    statuses: list[int] = []

    def read() -> None:
        for _ in range(40):
            with httpx.Client(timeout=30) as fresh:  # a new connection each time
                statuses.append(fresh.get(f"{server.fhir}/Task/{rid}").status_code)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 320
    assert all(cpu_ticks(p) > before[p] for p in pids), (before, {p: cpu_ticks(p) for p in pids})

    # A write through one process is what every process reads next (no stale cache).
    updated = httpx.put(f"{server.fhir}/Task/{rid}", json={
        "resourceType": "Task", "id": rid, "status": "in-progress", "intent": "order"},
        timeout=30)
    assert updated.status_code == 200, updated.text
    for _ in range(20):
        with httpx.Client(timeout=30) as fresh:
            body = fresh.get(f"{server.fhir}/Task/{rid}").json()
            assert (body["meta"]["versionId"], body["status"]) == ("2", "in-progress")

    # A paging cursor from one process pages on in any other.
    for n in range(12):
        assert httpx.post(f"{server.fhir}/Task", json={
            "resourceType": "Task", "status": "requested", "intent": "order",
            "identifier": [{"value": f"w{n}"}]}, timeout=30).status_code == 201
    first = httpx.get(f"{server.fhir}/Task?status=requested&_count=5", timeout=30).json()
    link = next(x["url"] for x in first["link"] if x["relation"] == "next")
    url = f"{server.base}{urlsplit(link).path}?{urlsplit(link).query}"
    pages = set()
    for _ in range(10):
        with httpx.Client(timeout=30) as fresh:
            page = fresh.get(url)
            assert page.status_code == 200, page.text
            pages.add(tuple(e["resource"]["id"] for e in page.json()["entry"]))
    assert len(pages) == 1 and len(next(iter(pages))) == 5


def test_a_killed_worker_is_replaced_and_sigterm_stops_them_all(
        serve: type[ServeProcess]) -> None:
    server = serve("--workers", "2")
    server.wait_ready()
    pids = wait_until(lambda: len(workers(server)) == 2 and workers(server),
                      what="two worker processes")
    database = server.database_pid()
    os.kill(pids[0], signal.SIGKILL)
    replaced = wait_until(lambda: (len(now := workers(server)) == 2 and pids[0] not in now
                                   and now), timeout=60, what="a new worker")
    assert pids[1] in replaced
    assert httpx.get(f"{server.base}/health/ready", timeout=60).status_code == 200
    assert server.terminate() < 10
    assert server.process.returncode == 0, server.log()
    for pid in [*replaced, database]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(
            f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
