"""While the supervised embedded database restarts, data requests are answered 503 at once.

Without this gate a request would wait for the driver's server selection to time out (and a
write inside a transaction is retried by the driver until the database is back): a client
gets a prompt 503 with `Retry-After` instead. Discovery (`metadata`, `.well-known`) and the
health checks need no database and stay up. Requests already running are not cut off: their
writes commit when the database is back, or fail; nothing is acknowledged that was not stored.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.api.errors import outcome_response
from fhir_server.api.health import Supervised
from fhir_server.errors import DatabaseUnavailable


class DatabaseGate:
    def __init__(self, app: ASGIApp, *, embedded: Supervised, prefixes: tuple[str, ...],
                 exempt: tuple[str, ...], retry_after: int) -> None:
        self.app = app
        self.embedded = embedded
        self.prefixes = prefixes
        self.exempt = exempt
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.embedded.available:
            path: str = scope["path"]
            if path.startswith(self.prefixes) and not path.startswith(self.exempt):
                response = outcome_response(DatabaseUnavailable.after(self.retry_after))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
