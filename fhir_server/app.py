"""The application factory: the HTTP application over the server's services.

`create_app` mounts the routers (built from the route table) and, at start-up, builds one
`Services` (`fhir_server.services`) and hands it down to every handler through
`app.state.services`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from fhir_server.api import errors as api_errors
from fhir_server.api import openapi
from fhir_server.api.fastpath import install_read_fast_path
from fhir_server.api.health import Readiness, Supervised, build_health_router
from fhir_server.api.route import routed
from fhir_server.api.routes import build_router
from fhir_server.api.unavailable import DatabaseGate, DatabaseStatus
from fhir_server.audit.completion import InteractionCompletion
from fhir_server.auth.cors import install_cors
from fhir_server.auth.routes import build_auth_router, build_well_known_router
from fhir_server.config import Settings
from fhir_server.observability.endpoint import metrics_endpoint
from fhir_server.observability.metrics import Metrics
from fhir_server.observability.middleware import Observe
from fhir_server.observability.settings import ObservabilitySettings
from fhir_server.services import auth_settings, build_services
from fhir_server.web_apps import build_web_apps_router, register_web_apps

if TYPE_CHECKING:
    from workflows.engine import Workflow

log = logging.getLogger(__name__)

# Shutdown's share of the 5 s budget for stopping the dispatcher, audit writer and client.
CLOSE_TIMEOUT = 1.5


def create_app(settings: Settings, extra_interceptors: Sequence[object] = (),
               workflows: Sequence[Workflow] = (), *, embedded: Supervised | None = None) -> FastAPI:
    """`extra_interceptors`: a deployment's own, registered at the order table's
    "deployment" number beside the built-in ones. `workflows`: a deployment's own workflows
    (workflows.Workflow), run by the engine (docs/workflows.md). `embedded`: the supervised
    embedded database, if serve started one (the ready check reports it restarting before a
    ping would time out)."""
    if not settings.mongodb_uri:
        raise ValueError("create_app needs settings.mongodb_uri (serve starts the embedded database)")
    # Built once: the routers and the services share these.
    auth = auth_settings(settings)
    status = DatabaseStatus(embedded)
    readiness = Readiness(status)
    observing = ObservabilitySettings.from_settings(settings)
    metrics = Metrics() if observing.metrics else None
    tracing = None
    if observing.otel:
        from fhir_server.observability.tracing import Tracing  # the SDK loads only when asked for

        tracing = Tracing()
    listeners = [x.commands for x in (metrics, tracing) if x is not None]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, auth, extra_interceptors, workflows, listeners)
        if tracing is not None:
            tracing.instrument(services.repository)
        app.state.services = services
        if auth.enabled:
            # The server's own SMART apps: public clients with fixed ids (fhir_server.web_apps).
            await register_web_apps(services.database.db, settings)
        readiness.indexes_built = True
        await services.start()
        try:
            yield
        finally:
            readiness.stopping = True
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await services.close()
            except TimeoutError:
                # Shutdown must end: whatever was still running is abandoned, the database
                # keeps what was committed (audit events wait in the write-ahead log).
                log.warning("shutdown did not finish within %ss; exiting anyway", CLOSE_TIMEOUT)
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="FHIR R4 care-coordination server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{settings.path_prefix}/openapi.json",
    )
    app.state.readiness = readiness
    api_errors.install(app, retry_after=settings.retry_after)
    openapi.install(app)
    if embedded is not None:
        # Added before CORS, so that CORS wraps it: a browser can read the 503.
        prefix = settings.path_prefix
        app.add_middleware(DatabaseGate, status=status, prefixes=(f"{prefix}/", "/auth/"),
                           exempt=(f"{prefix}/metadata", f"{prefix}/.well-known/"),
                           retry_after=settings.retry_after)
    install_cors(app)
    # Runs INTERACTION_COMPLETE when a response starts (audit records before data leaves).
    app.add_middleware(InteractionCompletion, token_path="/auth/token")
    app.include_router(build_well_known_router(auth), prefix=settings.path_prefix)
    app.include_router(build_router(settings), prefix=settings.path_prefix)
    install_read_fast_path(app, settings.path_prefix)
    app.include_router(build_auth_router(auth), prefix="/auth")
    app.include_router(build_health_router())
    app.include_router(build_web_apps_router(settings))
    if metrics is not None:
        endpoint = metrics_endpoint(metrics, auth_enabled=auth.enabled, token=observing.metrics_token)
        app.add_route("/metrics", endpoint, methods=["GET"], include_in_schema=False)
    # Outermost: every request gets its id, is counted and timed, whatever answers it.
    app.add_middleware(Observe, routed=routed, metrics=metrics, tracing=tracing, prefix=settings.path_prefix)
    return app
