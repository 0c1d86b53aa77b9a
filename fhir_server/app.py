"""The application factory: wires settings, database, interceptors, repository and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from interceptors.registry import default_interceptors
from pymongo import AsyncMongoClient

from fhir_server.api import errors as api_errors
from fhir_server.api.routes import build_router
from fhir_server.config import Settings
from fhir_server.elements import StructureInfo
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.repository import Repository
from fhir_server.validation import Validator, structure
from interceptors.hooks import HookRegistry

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler needs, built once at start-up."""

    settings: Settings
    client: AsyncMongoClient[dict[str, Any]]
    database: Database
    hooks: HookRegistry
    repository: Repository
    search: SearchEngine
    validator: Validator
    structure: StructureInfo

    async def close(self) -> None:
        await self.client.close()


def connect(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    if not settings.mongodb_uri:
        raise ValueError("settings.mongodb_uri is not set (serve starts the embedded database)")
    return AsyncMongoClient(settings.mongodb_uri, tz_aware=True, uuidRepresentation="standard")


async def build_services(settings: Settings) -> Services:
    """Connects, creates indexes and registers interceptors: the server without HTTP."""
    client = connect(settings)
    database = Database(client, settings.database)
    search = SearchEngine(settings)
    for collection, models in search.index_models().items():
        database.declare_indexes(collection, models)
    await database.ensure_indexes()
    validator = Validator(settings.profiles_dir)
    hooks = HookRegistry()
    for interceptor in default_interceptors(settings, validator):
        hooks.register(interceptor)
    return Services(
        settings=settings,
        client=client,
        database=database,
        hooks=hooks,
        repository=Repository(database, hooks, settings, search),
        search=search,
        validator=validator,
        structure=structure,
    )


def create_app(settings: Settings) -> FastAPI:
    if not settings.mongodb_uri:
        raise ValueError("create_app needs settings.mongodb_uri (serve starts the embedded database)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
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
    app.include_router(build_router(settings), prefix=settings.path_prefix)
    return app
