"""Health checks for load balancers and orchestrators (outside the FHIR base, no token).

`GET /health/live`: the process answers (restart it if not). `GET /health/ready`: it can
serve data — the database answers a ping, indexes were built at start-up, and the
Subscription dispatcher runs (when this process runs one); 503 otherwise, with what failed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson
from fastapi import APIRouter
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import Response

HEALTH_JSON = "application/health+json"


class Supervised(Protocol):
    """The embedded database's supervisor, as the checks see it."""

    available: bool
    failed: bool


class Reachability(Protocol):
    """Whether the database is reachable, as the driver and the supervisor see it."""

    embedded: Supervised | None

    @property
    def reachable(self) -> bool: ...


class Readiness:
    """What start-up has done so far, and what the ready check asks."""

    def __init__(self, status: Reachability) -> None:
        self.status = status
        self.indexes_built = False
        self.stopping = False


def _reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=HEALTH_JSON, headers=headers)


async def _database(request: Request, timeout: float) -> str | None:
    """None if the database answers a ping within `timeout`, else why not."""
    readiness: Readiness = request.app.state.readiness
    embedded = readiness.status.embedded
    if embedded is not None and not embedded.available:
        return "the embedded database is restarting" if not embedded.failed else \
            "the embedded database could not be restarted"
    services = getattr(request.app.state, "services", None)
    if services is None:
        return "not started"
    try:
        await asyncio.wait_for(services.client.admin.command("ping"), timeout)
    except (PyMongoError, TimeoutError) as exc:
        return f"unreachable: {type(exc).__name__}"
    return None


def build_health_router() -> APIRouter:
    router = APIRouter()

    @router.get("/health/live", include_in_schema=False)
    async def live() -> Response:
        return _reply(200, {"status": "pass"})

    @router.get("/health/ready", include_in_schema=False)
    async def ready(request: Request) -> Response:
        readiness: Readiness = request.app.state.readiness
        services = getattr(request.app.state, "services", None)
        checks: dict[str, str] = {}
        if readiness.stopping:
            checks["server"] = "shutting down"
        problem = await _database(request, services.settings.database_timeout if services else 1.0)
        checks["database"] = problem or "pass"
        checks["indexes"] = "pass" if readiness.indexes_built else "not built"
        if services is not None and services.settings.subscriptions.dispatcher:
            dispatcher = services.subscriptions.dispatcher
            checks["dispatcher"] = "not running" if not dispatcher.running else \
                "stalled" if dispatcher.stalled() else "pass"
        healthy = all(v == "pass" for v in checks.values())
        body = {"status": "pass" if healthy else "fail", "checks": checks}
        if healthy:
            return _reply(200, body)
        retry = str(services.settings.retry_after) if services else "5"
        return _reply(503, body, {"Retry-After": retry})

    return router
