"""The server without HTTP: every long-lived object, built once, in one container.

This is the composition root: the one module of `fhir_server` that knows `interceptors`.
The order it builds in is the order things depend on each other: settings, database, search,
auth (one token validator), the interceptors in their frozen registry, then the repository
on that registry, then the subscription machinery on the repository. `create_app` builds
one `Services` per application and hands it down (`request.app.state.services`); the CLI
and the loader build their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from fhir_server.audit.writer import AuditWriter
from fhir_server.auth.runtime import AuthRuntime
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import start_auth
from fhir_server.config import Settings
from fhir_server.elements import StructureInfo
from fhir_server.hooks import HookRegistry
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.repository import Repository
from fhir_server.validation import Validator, structure
from interceptors.registry import build_interceptors
from subscriptions.service import SubscriptionService, subscription_indexes


@dataclass
class Services:
    """Everything a request handler needs, built once at start-up."""

    settings: Settings
    auth: AuthSettings
    auth_runtime: AuthRuntime  # the auth stores and the one token validator
    client: AsyncMongoClient[dict[str, Any]]
    database: Database
    hooks: HookRegistry  # frozen
    repository: Repository
    search: SearchEngine
    validator: Validator
    structure: StructureInfo
    subscriptions: SubscriptionService
    audit: AuditWriter | None = None  # started and stopped with the app

    async def prepare(self) -> None:
        """Creates the collections' indexes and the signing keys (idempotent)."""
        await self.database.ensure_indexes()
        await start_auth(self.auth, self.database.db)

    async def start(self) -> None:
        """Starts the background work: subscription dispatch and the audit writer."""
        await self.subscriptions.start()
        if self.audit is not None:
            await self.audit.start()

    async def close(self) -> None:
        await self.subscriptions.stop()
        if self.audit is not None:
            await self.audit.stop()
        await self.client.close()


# A socket read may take this long before the driver gives up on the server (long searches
# take seconds on the embedded database; a hung server must not hold a request forever).
SOCKET_TIMEOUT_MS = 60_000


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


def assemble(settings: Settings, auth: AuthSettings | None = None,
             extra_interceptors: Sequence[object] = ()) -> Services:
    """Builds every object (no I/O yet: see `Services.prepare`). `auth`: the application's
    auth settings when it has built them for its routers already."""
    auth = auth if auth is not None else auth_settings(settings)
    client = connect(settings)
    database = Database(client, settings.database)
    search = SearchEngine(settings)
    validator = Validator(settings.profiles_dir)
    auth_runtime = AuthRuntime.build(auth, database.db)
    interceptors = build_interceptors(settings, auth, auth_runtime.validator, database, search,
                                      validator, extra_interceptors)
    for indexes in (search.index_models(), subscription_indexes(), interceptors.indexes):
        for collection, models in indexes.items():
            database.declare_indexes(collection, models)
    repository = Repository(database, interceptors.hooks, settings, search)
    return Services(
        settings=settings,
        auth=auth,
        auth_runtime=auth_runtime,
        client=client,
        database=database,
        hooks=interceptors.hooks,
        repository=repository,
        search=search,
        validator=validator,
        structure=structure,
        subscriptions=SubscriptionService(settings, database, repository, interceptors.guard),
        audit=interceptors.audit,
    )


async def build_services(settings: Settings, auth: AuthSettings | None = None,
                         extra_interceptors: Sequence[object] = ()) -> Services:
    """The services with their database prepared (indexes, signing keys); not started."""
    services = assemble(settings, auth, extra_interceptors)
    await services.prepare()
    return services
