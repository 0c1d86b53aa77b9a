"""Connections that send partial headers, nothing, or half a body are closed after the
configured header / body / keep-alive timeouts (FHIR_HEADER_TIMEOUT, FHIR_BODY_TIMEOUT,
FHIR_KEEP_ALIVE_TIMEOUT; here set by flags to 1-2 s)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.ops.conftest import ServeProcess

N = 200


@pytest.fixture(scope="module")
def timed_server(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp("timeouts") / "data",
                          "--header-timeout", "2", "--body-timeout", "2", "--keep-alive-timeout", "1",
                          env={"MONGODB_URI": mongodb_uri, "FHIR_DATABASE": "fhir_ops_timeouts"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def _closed_by_server(sockets: list[socket.socket], within: float) -> tuple[int, list[bytes]]:
    """How many of `sockets` the server closed within `within` seconds, and what it sent."""
    open_ = set(sockets)
    replies: list[bytes] = []
    deadline = time.monotonic() + within
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_), [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if data:
                replies.append(data)
            else:
                open_.discard(sock)  # EOF: the server closed it
    return len(sockets) - len(open_), replies


def test_partial_header_and_silent_connections_are_closed(timed_server: ServeProcess) -> None:
    partial = [_connect(timed_server.port) for _ in range(N)]
    for sock in partial:
        sock.send(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = [_connect(timed_server.port) for _ in range(N)]
    opened = time.monotonic()
    # While they are held, the server still answers others.
    assert httpx.get(f"{timed_server.fhir}/metadata", timeout=10).status_code == 200
    closed, replies = _closed_by_server(partial + silent, within=30)
    elapsed = time.monotonic() - opened
    for sock in partial + silent:
        sock.close()
    assert closed == 2 * N, f"{2 * N - closed} connections still open after {elapsed:.1f}s"
    # Not before the header timeout: 2 s.
    assert elapsed >= 1.5
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies)
    assert len(replies) == N  # the partial ones were told why; the silent ones just closed


def test_stalled_body_is_closed(timed_server: ServeProcess) -> None:
    sock = _connect(timed_server.port)
    sock.send(b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"resourceType\":")
    closed, _ = _closed_by_server([sock], within=30)
    sock.close()
    assert closed == 1


def test_idle_keep_alive_connection_is_closed(timed_server: ServeProcess) -> None:
    sock = _connect(timed_server.port)
    sock.send(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.setblocking(True)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    sock.setblocking(False)
    closed, _ = _closed_by_server([sock], within=30)
    sock.close()
    assert closed == 1


def test_slow_but_complete_requests_still_work(timed_server: ServeProcess) -> None:
    # A request sent in pieces within the timeouts is served, and a kept-alive connection
    # serves a second request after a pause shorter than the keep-alive timeout.
    sock = socket.create_connection(("127.0.0.1", timed_server.port), timeout=10)
    for piece in (b"GET /health/live HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
        sock.send(piece)
        time.sleep(0.3)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    time.sleep(0.3)
    sock.send(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    sock.close()
