"""While the database is unreachable, data requests are answered 503 at once.

Whether it is reachable comes from the driver's own monitoring (a topology listener: no
writable server means down) and, for the embedded database, from its supervisor (down from the
moment the process dies until it is restarted). Without this gate a request would wait for the
driver's server selection to time out, and a write inside a transaction would be retried by
the driver for up to two minutes: a client gets a prompt 503 with `Retry-After` instead.
Discovery (`metadata`, `.well-known`) and the health checks need no database and stay up.
Requests already running are not cut off: their writes commit when the database is back, or
fail; nothing is acknowledged that was not stored.
"""

from __future__ import annotations

from pymongo.monitoring import (
    TopologyClosedEvent,
    TopologyDescriptionChangedEvent,
    TopologyListener,
    TopologyOpenedEvent,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.api.errors import outcome_response
from fhir_server.api.health import Supervised
from fhir_server.errors import DatabaseUnavailable


class DatabaseStatus(TopologyListener):
    """Reachable while the driver sees a server it can write to."""

    def __init__(self, embedded: Supervised | None = None) -> None:
        self.embedded = embedded
        self._writable = True  # until the driver says otherwise (it starts by discovering)

    @property
    def reachable(self) -> bool:
        return self._writable and (self.embedded is None or self.embedded.available)

    def opened(self, event: TopologyOpenedEvent) -> None:
        pass

    def description_changed(self, event: TopologyDescriptionChangedEvent) -> None:
        self._writable = event.new_description.has_writable_server()

    def closed(self, event: TopologyClosedEvent) -> None:
        pass


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
