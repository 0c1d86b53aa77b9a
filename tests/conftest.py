"""Test fixtures: the real embedded database and a real uvicorn server, over HTTP.

The database (SecantusDB, in memory) starts once per test session; every test starts with
empty collections. The server runs in a background thread on a free loopback port, so tests
drive it exactly as a client would.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.app import create_app
from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings, WorkflowSettings
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.services import auth_settings
from tests.helpers import wipe

EXAMPLES_DIR = Path(__file__).parent / "fixtures" / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A uvicorn server in a thread, serving `create_app(settings)`."""

    def __init__(self, settings: Settings, extra_interceptors: Sequence[object] = (),
                 workflows: Sequence[Any] = ()) -> None:
        self.settings = settings
        config = uvicorn.Config(
            create_app(settings, extra_interceptors, workflows), host=settings.host, port=settings.port,
            log_level="warning", lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except OSError as exc:
            # uvloop refuses to close a loop that still holds a handle (EBUSY): the server has
            # stopped serving by then; only its thread's loop is left to the process's exit.
            if exc.errno != errno.EBUSY:
                raise

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    with EmbeddedDatabase(None) as db:
        yield db.uri


def make_settings(mongodb_uri: str, database: str = "fhir_test", **overrides: Any) -> Settings:
    port = free_port()
    # Auth is off for the tests of other features; tests/security runs the server with it on.
    # The workflows the server ships run where a test asks for them (tests/workflows), so the
    # other tests' servers hold no Subscription and act on no write of their own.
    return Settings(
        host="127.0.0.1",
        port=port,
        base_url=f"http://127.0.0.1:{port}/fhir",
        mongodb_uri=mongodb_uri,
        database=database,
        auth_enabled=False,
        # The shipped workflows (workflows/builtin.py) write resources of their own on CarePlan,
        # Task, ... changes: tests of other features run without them; tests/workflows turn them on.
        workflows=WorkflowSettings(builtin=False),
    ).with_(**overrides)


@pytest.fixture(scope="session")
def settings(mongodb_uri: str) -> Settings:
    return make_settings(mongodb_uri, max_body_bytes=2 * 1024 * 1024)


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[RunningServer]:
    with RunningServer(settings) as running:
        yield running


@pytest.fixture(scope="session")
def mongo(mongodb_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def clean_db(mongo: MongoClient[dict[str, Any]], settings: Settings) -> None:
    wipe(mongo[settings.database])


def forget_cached_reads(running: RunningServer) -> None:
    """Empties the server's read cache and its copies of recent versions: a clean-up deletes
    documents behind the server's back, without the change events the cache follows
    (fhir_server/storage/readcache.py, recent.py)."""
    repository = running.server.config.app.state.services.repository  # type: ignore[attr-defined]
    if repository.read_cache is not None:
        repository.read_cache.clear()
    repository.database.recent.clear()  # the versions committed lately (storage/recent.py)


@pytest.fixture
def client(server: RunningServer, clean_db: None) -> Iterator[httpx.Client]:
    forget_cached_reads(server)
    with httpx.Client(base_url=server.settings.base_url, timeout=30) as c:
        yield c


def load_example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES_DIR / name).read_text())
    return data


# ---------------------------------------------------------------- a server with SMART auth on

Mint = Callable[..., str]


@pytest.fixture(scope="session")
def secure_settings(mongodb_uri: str) -> Settings:
    return make_settings(mongodb_uri, database="fhir_secure", auth_enabled=True)


@pytest.fixture(scope="session")
def secure_server(secure_settings: Settings) -> Iterator[RunningServer]:
    with RunningServer(secure_settings) as running:
        yield running


@pytest.fixture(scope="session")
def mint(secure_server: RunningServer) -> Mint:
    settings = secure_server.settings

    def mint_token(scope: str, *, patient: str | None = None, fhir_user: str | None = None,
                   client_id: str = "fhir-server-cli") -> str:
        async def work() -> str:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user, client_id=client_id)
            finally:
                await client.close()

        return asyncio.run(work())

    return mint_token


def forget_cached_consents(running: RunningServer) -> None:
    """Empties the server's Consent cache: a test's clean-up deletes Consents behind the
    server's back, without the change events the cache follows."""
    from interceptors.access import AccessInterceptor

    hooks = running.server.config.app.state.services.hooks  # type: ignore[attr-defined]
    for entries in hooks._hooks.values():
        for entry in entries:
            owner = getattr(entry.fn, "__self__", None)
            if isinstance(owner, AccessInterceptor) and owner.policy.consent is not None:
                owner.policy.consent.cache.clear()


@pytest.fixture
def secure(secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> Iterator[Callable[..., httpx.Client]]:
    """Returns a factory of HTTP clients, each bearing a token (or none)."""
    wipe(mongo[secure_server.settings.database], keep=lambda name: name.startswith("auth_"))  # the signing keys
    forget_cached_consents(secure_server)
    forget_cached_reads(secure_server)
    clients: list[httpx.Client] = []

    def client(token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=secure_server.settings.base_url, headers=headers, timeout=30)
        clients.append(c)
        return c

    yield client
    for c in clients:
        c.close()
