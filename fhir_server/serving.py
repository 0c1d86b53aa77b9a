"""Running the HTTP server: the listening socket, uvicorn's settings, bounded shutdown.

The socket is bound before anything else starts, so a port already in use ends the process at
once with a message saying what to change (instead of a server that started its database and
dispatcher and then hangs). Timeouts come from Settings (see fhir_server/connections.py).
"""

from __future__ import annotations

import socket
import time
from types import FrameType
from typing import Any

import uvicorn

from fhir_server import heap
from fhir_server.config import Settings
from fhir_server.connections import TimedHttpToolsProtocol
from fhir_server.observability import logs
from fhir_server.observability.settings import ObservabilitySettings

# Seconds uvicorn waits for requests in progress at shutdown before cancelling them; the app's
# own shutdown and the embedded database's stop have their own budgets (all within 5 s).
GRACEFUL_SHUTDOWN = 1.0
# Everything after a SIGTERM, the embedded database's stop included, ends within this.
SHUTDOWN_BUDGET = 4.0


class PortUnavailable(OSError):
    pass


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (uvicorn listens on it), or PortUnavailable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart may reuse the port at once (TIME_WAIT), yet two live
    # listeners on one port still conflict.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Stop the process using "
            f"port {port}, or choose another port with FHIR_PORT or --port."
        ) from None
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, noting when it was asked to stop (the shutdown budget starts then)."""

    exit_requested_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        heap.settle()  # the app's start-up (lifespan) is done: its objects are all there

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_requested_at is None:
            self.exit_requested_at = time.monotonic()
        super().handle_exit(sig, frame)

    def remaining(self, minimum: float = 0.5) -> float:
        """Seconds left of the shutdown budget (at least `minimum`)."""
        if self.exit_requested_at is None:
            return SHUTDOWN_BUDGET
        return max(minimum, SHUTDOWN_BUDGET - (time.monotonic() - self.exit_requested_at))


def server(app: Any, settings: Settings, *, log_level: str, access_log: bool) -> Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        http=TimedHttpToolsProtocol.with_timeouts(settings.header_timeout, settings.body_timeout),
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout)),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,  # type: ignore[arg-type]
    )
    # After uvicorn.Config, which installs uvicorn's own handlers: they get the format too.
    logs.configure(ObservabilitySettings.from_settings(settings).log_format)
    return Server(config)
