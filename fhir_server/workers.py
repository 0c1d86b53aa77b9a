"""`serve --workers N`: N server processes answering on one listening socket, one database.

Python runs one request's code on one core at a time, so a second core serves requests only
from a second process. The parent binds the socket and starts the embedded database (or uses
MongoDB), then starts the workers; the kernel hands each new connection to whichever worker
accepts it. Everything the processes share lives in the database, which is why they may
share it: subscription and matcher leases (subscriptions.leases, one holder per process),
workflow timers (claimed by identifier), the audit write-ahead log (one locked segment per
process), the Consent cache (invalidated through the outbox), search paging cursors (signed
with FHIR_CURSOR_KEY, the same in every worker) and the sort-key bucket directory (a hint).

The first worker starts alone and the others once it is ready, so first-time set-up
(collections, indexes, signing keys) runs once. A worker that dies is started again (at most
once per RESTART_PAUSE seconds each); SIGTERM or SIGINT to the parent stops every worker,
then the database.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from typing import Any

from fhir_server.config import Settings

log = logging.getLogger("fhir_server")

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 5.0
# A worker that keeps dying is started again no more often than this.
RESTART_PAUSE = 1.0


def _worker(settings: Settings, sock: socket.socket, log_level: str, access_log: bool,
            ready: Event) -> None:
    """One worker process: the app on the inherited socket, until SIGTERM."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from fhir_server import serving
    from fhir_server.app import create_app

    server = serving.server(create_app(settings), settings, log_level=log_level,
                            access_log=access_log)

    def signal_ready() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.set()

    threading.Thread(target=signal_ready, daemon=True).start()
    server.run(sockets=[sock])


class Workers:
    def __init__(self, count: int, settings: Settings, sock: socket.socket, *,
                 log_level: str, access_log: bool) -> None:
        self.count = count
        self.settings = settings
        self.sock = sock
        self.log_level = log_level
        self.access_log = access_log
        self.context = multiprocessing.get_context("spawn")
        self.procs: list[tuple[SpawnProcess, float]] = []
        # Each worker's ready event, kept alive: the child unpickles it after it starts.
        self.events: dict[int, Event] = {}
        self.stopping = threading.Event()

    def _start(self, n: int) -> tuple[SpawnProcess, Event]:
        ready = self.context.Event()
        proc = self.context.Process(
            target=_worker, name=f"fhir-worker-{n}",
            args=(self.settings, self.sock, self.log_level, self.access_log, ready))
        proc.start()
        self.events[n] = ready
        log.info("worker %d started (pid %s)", n, proc.pid)
        return proc, ready

    def run(self) -> int:
        """Starts the workers and keeps them running until stop(); the exit code."""
        first, ready = self._start(0)
        self.procs.append((first, time.monotonic()))
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2):
            if not first.is_alive() or self.stopping.is_set() or time.monotonic() > deadline:
                self.stop()
                return 1
        for n in range(1, self.count):
            self.procs.append((self._start(n)[0], time.monotonic()))
        while not self.stopping.wait(0.5):
            for n, (proc, started) in enumerate(self.procs):
                if proc.is_alive() or self.stopping.is_set():
                    continue
                if time.monotonic() - started < RESTART_PAUSE:
                    continue
                log.error("worker %d exited (%s): starting it again", n, proc.exitcode)
                self.procs[n] = (self._start(n)[0], time.monotonic())
        return 0

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.stopping.set()
        for proc, _ in self.procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc, _ in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)

    def pids(self) -> list[Any]:
        return [p.pid for p, _ in self.procs]


def serve_workers(count: int, settings: Settings, sock: socket.socket, embedded: Any, *,
                  log_level: str, access_log: bool) -> int:
    """Runs `count` workers until SIGTERM/SIGINT; stops the embedded database after them."""
    workers = Workers(count, settings, sock, log_level=log_level, access_log=access_log)

    def on_signal(signum: int, frame: object) -> None:
        workers.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if embedded is not None:
        # The database restarts on its own port; workers reconnect. If it cannot, stop.
        embedded.supervise(workers.stopping.set)
    code = workers.run()
    workers.stop()
    if embedded is not None and embedded.failed:
        log.critical("the embedded database could not be restarted: exiting")
        return 3
    return code
