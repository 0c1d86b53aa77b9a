"""A real rest-hook receiver for tests: an HTTP server on loopback that records what arrives.

It can be told to fail the next N requests, and be stopped and started again on the same
port (a dead endpoint: connections are refused).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port
from tests.helpers import PATIENCE


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.perf_counter() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def status_type(self) -> str | None:
        """The SubscriptionStatus `type` of a Backport notification Bundle."""
        return _parameter(self.json, "type") if self.body else None

    @property
    def event_numbers(self) -> list[int]:
        status = self.json["entry"][0]["resource"]
        return [int(part["valueString"]) for p in status["parameter"] if p["name"] == "notification-event"
                for part in p["part"] if part["name"] == "event-number"]


def _parameter(bundle: dict[str, Any], name: str) -> Any:
    status = bundle["entry"][0]["resource"]
    for p in status["parameter"]:
        if p["name"] == name:
            return next(v for k, v in p.items() if k.startswith("value"))
    return None


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Received] = []
        self.fail_next = 0
        self.fail_status = 500
        self.delay = 0.0
        self.cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                at = time.perf_counter()
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.cond:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.requests.append(Received(
                            "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, at))
                    receiver.cond.notify_all()
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> Receiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 15.0) -> list[Received]:
        timeout *= PATIENCE
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {len(self.requests)} requests")
                self.cond.wait(left)
            return list(self.requests)

    def events(self) -> list[Received]:
        """The event notifications received so far (no handshakes, no heartbeats)."""
        with self.cond:
            return [r for r in self.requests if r.body and r.status_type == "event-notification"]
