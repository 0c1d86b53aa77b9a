"""The application factory: wires settings, database, interceptors, repository and routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pymongo import AsyncMongoClient

from fhir_server.api import errors as api_errors
from fhir_server.api.health import Readiness, Supervised, build_health_router
from fhir_server.api.routes import build_router
from fhir_server.api.unavailable import DatabaseGate, DatabaseStatus
from fhir_server.audit.completion import InteractionCompletion
from fhir_server.audit.writer import AuditWriter
from fhir_server.auth.cors import install_cors
from fhir_server.auth.routes import build_auth_router, build_well_known_router
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import start_auth
from fhir_server.config import Settings
from fhir_server.elements import StructureInfo
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.repository import Repository
from fhir_server.validation import Validator, structure
from interceptors.hooks import HookRegistry
from interceptors.registry import (
    audit_writer,
    change_interceptors,
    default_interceptors,
    privacy_indexes,
    privacy_interceptors,
)
from interceptors.smart import build_smart_interceptor
from subscriptions.service import SubscriptionService, subscription_indexes

log = logging.getLogger(__name__)

# Shutdown's share of the 5 s budget for stopping the dispatcher, audit writer and client.
CLOSE_TIMEOUT = 1.5
# A socket read may take this long before the driver gives up on the server (long searches
# take seconds on the embedded database; a hung server must not hold a request forever).
SOCKET_TIMEOUT_MS = 60_000


@dataclass
class Services:
    """Everything a request handler needs, built once at start-up."""

    settings: Settings
    auth: AuthSettings
    client: AsyncMongoClient[dict[str, Any]]
    database: Database
    hooks: HookRegistry
    repository: Repository
    search: SearchEngine
    validator: Validator
    structure: StructureInfo
    subscriptions: SubscriptionService
    audit: AuditWriter | None = None  # started and stopped with the app

    async def close(self) -> None:
        await self.subscriptions.stop()
        if self.audit is not None:
            await self.audit.stop()
        await self.client.close()


def connect(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    if not settings.mongodb_uri:
        raise ValueError("settings.mongodb_uri is not set (serve starts the embedded database)")
    # Without these, a request to a dead database waits 30 s for server selection and then
    # answers 500; with them it is answered 503 (api/errors.py) within database_timeout.
    timeout_ms = max(100, int(settings.database_timeout * 1000))
    return AsyncMongoClient(
        settings.mongodb_uri, tz_aware=True, uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
        socketTimeoutMS=SOCKET_TIMEOUT_MS,
    )


def auth_settings(settings: Settings) -> AuthSettings:
    if settings.auth_enabled is None:
        return AuthSettings.from_env(settings)
    return AuthSettings.from_env(settings, enabled=settings.auth_enabled)


async def build_services(settings: Settings) -> Services:
    """Connects, creates indexes and registers interceptors: the server without HTTP."""
    auth = auth_settings(settings)
    client = connect(settings)
    database = Database(client, settings.database)
    search = SearchEngine(settings)
    for collection, models in search.index_models().items():
        database.declare_indexes(collection, models)
    for collection, models in subscription_indexes().items():
        database.declare_indexes(collection, models)
    for collection, models in privacy_indexes().items():
        database.declare_indexes(collection, models)
    await database.ensure_indexes()
    validator = Validator(settings.profiles_dir)
    await start_auth(auth, database.db)
    hooks = HookRegistry()
    for interceptor in [*default_interceptors(settings, validator), *change_interceptors()]:
        hooks.register(interceptor)
    smart = build_smart_interceptor(auth, database.db, filter_builder=search.filter_for)
    if smart is not None:
        hooks.register(smart)
    repository = Repository(database, hooks, settings, search)
    subscriptions = SubscriptionService(settings, database, repository, search)
    hooks.register(subscriptions.guard)
    audit = audit_writer(settings, auth.enabled, repository)
    for interceptor in privacy_interceptors(settings, auth.enabled, repository, audit):
        hooks.register(interceptor)
    return Services(
        settings=settings,
        auth=auth,
        client=client,
        database=database,
        hooks=hooks,
        repository=repository,
        search=search,
        validator=validator,
        structure=structure,
        subscriptions=subscriptions,
        audit=audit,
    )


def create_app(settings: Settings, *, embedded: Supervised | None = None) -> FastAPI:
    """The ASGI app. `embedded`: the supervised embedded database, if serve started one (the
    ready check reports it restarting before a ping would time out)."""
    if not settings.mongodb_uri:
        raise ValueError("create_app needs settings.mongodb_uri (serve starts the embedded database)")
    status = DatabaseStatus(embedded)
    readiness = Readiness(status)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
        readiness.indexes_built = True
        await services.subscriptions.start()
        if services.audit is not None:
            await services.audit.start()
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

    app = FastAPI(
        title="FHIR R4 care-coordination server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{settings.path_prefix}/openapi.json",
    )
    app.state.readiness = readiness
    api_errors.install(app, retry_after=settings.retry_after)
    if embedded is not None:
        # Added before CORS, so that CORS wraps it: a browser can read the 503.
        prefix = settings.path_prefix
        app.add_middleware(DatabaseGate, status=status, prefixes=(f"{prefix}/", "/auth/"),
                           exempt=(f"{prefix}/metadata", f"{prefix}/.well-known/"),
                           retry_after=settings.retry_after)
    install_cors(app)
    # Runs INTERACTION_COMPLETE when a response starts (audit records before data leaves).
    app.add_middleware(InteractionCompletion, token_path="/auth/token")
    auth = auth_settings(settings)
    app.include_router(build_well_known_router(auth), prefix=settings.path_prefix)
    app.include_router(build_router(settings), prefix=settings.path_prefix)
    app.include_router(build_auth_router(auth), prefix="/auth")
    app.include_router(build_health_router())
    return app
