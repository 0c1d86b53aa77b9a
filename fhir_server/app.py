"""The application factory: the HTTP application over the server's services.

`create_app` mounts the routers (built from the route table) and, at start-up, builds one
`Services` (`fhir_server.services`) and hands it down to every handler through
`app.state.services`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from fhir_server.api import errors as api_errors
from fhir_server.api import openapi
from fhir_server.api.routes import build_router
from fhir_server.audit.completion import InteractionCompletion
from fhir_server.auth.cors import install_cors
from fhir_server.auth.routes import build_auth_router, build_well_known_router
from fhir_server.config import Settings
from fhir_server.services import auth_settings, build_services

if TYPE_CHECKING:
    from workflows.engine import Workflow


def create_app(settings: Settings, extra_interceptors: Sequence[object] = (),
               workflows: Sequence[Workflow] = ()) -> FastAPI:
    """`extra_interceptors`: a deployment's own, registered at the order table's
    "deployment" number beside the built-in ones. `workflows`: a deployment's own workflows
    (workflows.Workflow), run by the engine (docs/workflows.md)."""
    if not settings.mongodb_uri:
        raise ValueError("create_app needs settings.mongodb_uri (serve starts the embedded database)")
    # Built once: the routers and the services share these.
    auth = auth_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, auth, extra_interceptors, workflows)
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(
        title="FHIR R4 care-coordination server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{settings.path_prefix}/openapi.json",
    )
    api_errors.install(app)
    openapi.install(app)
    install_cors(app)
    # Runs INTERACTION_COMPLETE when a response starts (audit records before data leaves).
    app.add_middleware(InteractionCompletion, token_path="/auth/token")
    app.include_router(build_well_known_router(auth), prefix=settings.path_prefix)
    app.include_router(build_router(settings), prefix=settings.path_prefix)
    app.include_router(build_auth_router(auth), prefix="/auth")
    return app
