"""While the supervised embedded database restarts, data requests are answered 503 at once.

From the moment the process dies until it is restarted (the supervisor knows both), a request
would otherwise wait for the driver's server selection to time out, and a write inside a
transaction would be retried by the driver until the database is back: a client gets a prompt
503 with `Retry-After` instead. Discovery (`metadata`, `.well-known`) and the health checks need
no database and stay up. Requests already running are not cut off: their writes commit when
the database is back, or fail; nothing is acknowledged that was not stored. (With MONGODB_URI
there is no supervisor: a request that cannot reach the database is answered 503 by
api/errors.py after FHIR_DATABASE_TIMEOUT.)
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.api.errors import outcome_response
from fhir_server.api.health import Supervised
from fhir_server.errors import DatabaseUnavailable


class DatabaseStatus:
    """Reachable unless the supervised embedded database is down.

    (The driver's topology events were tried as a second source and dropped: under load they
    reported the server lost for long stretches while it answered.)"""

    def __init__(self, embedded: Supervised | None = None) -> None:
        self.embedded = embedded

    @property
    def reachable(self) -> bool:
        return self.embedded is None or self.embedded.available


class DatabaseGate:
    def __init__(self, app: ASGIApp, *, status: DatabaseStatus, prefixes: tuple[str, ...],
                 exempt: tuple[str, ...], retry_after: int) -> None:
        self.app = app
        self.status = status
        self.prefixes = prefixes
        self.exempt = exempt
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.status.reachable:
            path: str = scope["path"]
            if path.startswith(self.prefixes) and not path.startswith(self.exempt):
                response = outcome_response(DatabaseUnavailable.after(self.retry_after))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
