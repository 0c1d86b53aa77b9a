"""The server without HTTP: every long-lived object, built once, in one container.

This is the composition root: the one module of `fhir_server` that knows `interceptors`.
The order it builds in is the order things depend on each other: settings, database, search,
auth (one token validator), the interceptors in their frozen registry, then the repository
on that registry, then the subscription machinery on the repository, then the workflow
engine on the subscriptions (`workflows`: a deployment's own workflows, like its interceptors). `create_app` builds
one `Services` per application and hands it down (`request.app.state.services`); the CLI
and the loader build their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import AsyncMongoClient

from fhir_server.audit.writer import AuditWriter
from fhir_server.auth.runtime import AuthRuntime
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import start_auth
from fhir_server.config import Settings
from fhir_server.elements import StructureInfo
from fhir_server.hooks import HookRegistry
from fhir_server.messaging import inbox
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.repository import Repository
from fhir_server.validation import Validator, structure
from interceptors.registry import build_interceptors
from subscriptions.service import SubscriptionService, subscription_indexes
from telehealth.service import Telehealth
from telehealth.settings import TelehealthSettings
from workflows.builtin import BUILTIN
from workflows.definitions import Definitions
from workflows.engine import Engine, Workflow, load_workflows
from workflows.timers import Timers, timer_indexes

log = logging.getLogger(__name__)
CLIENT_CLOSE_TIMEOUT = 5.0


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
    workflows: Engine | None = None  # None when settings.workflows.enabled is off
    telehealth: Telehealth | None = None  # the video provider and the built-in rooms

    async def prepare(self) -> None:
        """Creates the collections' indexes and the signing keys (idempotent)."""
        await self.database.ensure_indexes()
        await inbox.prepare(self.database.db)
        await start_auth(self.auth, self.database.db)

    async def start(self) -> None:
        """Starts the background work: subscription dispatch, the audit writer, the workflows
        (their Subscriptions and timers; nothing when none is registered)."""
        await self.subscriptions.start()
        if self.audit is not None:
            await self.audit.start()
        if self.workflows is not None:
            await self.workflows.start()

    async def close(self) -> None:
        if self.telehealth is not None:
            await self.telehealth.rooms.stop()
        if self.workflows is not None:
            await self.workflows.stop()
        await self.subscriptions.stop()
        if self.audit is not None:
            await self.audit.stop()
        try:
            # The driver's close waits on its topology lock, which a task cancelled amid
            # server selection can leave held (pymongo 4.20 "Lock is not acquired"): bounded.
            async with asyncio.timeout(CLIENT_CLOSE_TIMEOUT):
                await self.client.close()
        except TimeoutError:
            log.warning("the database client did not close within %ss: left to the process's exit",
                        CLIENT_CLOSE_TIMEOUT)


# A socket read may take this long before the driver gives up on the server (long searches
# take seconds on the embedded database; a hung server must not hold a request forever).
SOCKET_TIMEOUT_MS = 60_000
# How late the driver's heartbeat may be before it takes the database for dead. The driver
# uses connectTimeoutMS for that (its monitor's socket timeout, SDAM), and a heartbeat found
# late clears the pool and cancels every operation in flight ("operation cancelled": 503s).
# On a loaded machine a busy SecantusDB sends its streamed heartbeat late: measured up to 0.9 s
# late at load 11, and 2 of 16 concurrent `$join`s met that in a CI run when it was 2 s. A
# database that is gone refuses the connection at once, so this does not slow the 503.
HEARTBEAT_LATE_MS = 20_000


def connect(settings: Settings, listeners: Sequence[Any] = ()) -> AsyncMongoClient[dict[str, Any]]:
    if not settings.mongodb_uri:
        raise ValueError("settings.mongodb_uri is not set (serve starts the embedded database)")
    # Without these, a request to a dead database waits 30 s for server selection and then
    # answers 500; with them it is answered 503 (api/errors.py) within database_timeout. A
    # database that is only slow (a stall longer than database_timeout) delays the requests
    # in flight and fails none (HEARTBEAT_LATE_MS).
    timeout_ms = max(100, int(settings.database_timeout * 1000))
    return AsyncMongoClient(
        settings.mongodb_uri, tz_aware=True, uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=max(timeout_ms, HEARTBEAT_LATE_MS),
        socketTimeoutMS=SOCKET_TIMEOUT_MS, event_listeners=list(listeners),
    )


def auth_settings(settings: Settings) -> AuthSettings:
    if settings.auth_enabled is None:
        return AuthSettings.from_env(settings)
    return AuthSettings.from_env(settings, enabled=settings.auth_enabled)


def load_definitions(settings: Settings) -> Definitions | None:
    """The workflow definitions, validated (a wrong file stops start-up); None: engine off."""
    w = settings.workflows
    return Definitions.load(w.definitions or settings.profiles_dir / "workflows.yaml") if w.enabled else None


def build_engine(settings: Settings, definitions: Definitions | None, database: Database,
                 repository: Repository, subscriptions: SubscriptionService,
                 workflows: Sequence[Workflow]) -> Engine | None:
    if definitions is None:
        return None
    w = settings.workflows
    timers = Timers(database.db, timedelta(seconds=w.timer_lease))
    return Engine(w, settings.base_url, repository, subscriptions, timers, definitions, workflows)


def assemble(settings: Settings, auth: AuthSettings | None = None,
             extra_interceptors: Sequence[object] = (), workflows: Sequence[Workflow] = (),
             listeners: Sequence[Any] = ()) -> Services:
    """Builds every object (no I/O yet: see `Services.prepare`). `auth`: the application's
    auth settings when it has built them for its routers already. `listeners`: pymongo
    command listeners (metrics, tracing)."""
    auth = auth if auth is not None else auth_settings(settings)
    # Before any connection: a wrong definitions file or workflow name leaks nothing.
    definitions = load_definitions(settings)
    telehealth = TelehealthSettings.from_env()  # a wrong video provider setting stops start-up here too
    if definitions is not None:
        w = settings.workflows
        workflows = [*workflows, *load_workflows((*(BUILTIN if w.builtin else ()), *w.modules))]
    client = connect(settings, listeners)
    database = Database(client, settings.database)
    search = SearchEngine(settings)
    validator = Validator(settings.profiles_dir)
    auth_runtime = AuthRuntime.build(auth, database.db)
    interceptors = build_interceptors(settings, auth, auth_runtime.validator, database, search,
                                      validator, extra_interceptors)
    for indexes in (search.index_models(), subscription_indexes(), timer_indexes(), interceptors.indexes):
        for collection, models in indexes.items():
            database.declare_indexes(collection, models)
    repository = Repository(database, interceptors.hooks, settings, search)
    subscriptions = SubscriptionService(settings, database, repository, interceptors.guard)
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
        subscriptions=subscriptions,
        audit=interceptors.audit,
        workflows=build_engine(settings, definitions, database, repository, subscriptions, workflows),
        telehealth=Telehealth.build(telehealth, settings.base_url, database.db),
    )


async def build_services(settings: Settings, auth: AuthSettings | None = None,
                         extra_interceptors: Sequence[object] = (),
                         workflows: Sequence[Workflow] = (), listeners: Sequence[Any] = ()) -> Services:
    """The services with their database prepared (indexes, signing keys); not started."""
    services = assemble(settings, auth, extra_interceptors, workflows, listeners)
    await services.prepare()
    return services
