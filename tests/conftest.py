"""Test fixtures: the real embedded database and a real uvicorn server, over HTTP.

The database (SecantusDB, in memory) starts once per test session; every test starts with
empty collections. The server runs in a background thread on a free loopback port, so tests
drive it exactly as a client would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pymongo import MongoClient

from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.embedded_db import EmbeddedDatabase

EXAMPLES_DIR = Path(__file__).parent / "fixtures" / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A uvicorn server in a thread, serving `create_app(settings)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = uvicorn.Config(
            create_app(settings), host=settings.host, port=settings.port,
            log_level="warning", lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

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
    return Settings(
        host="127.0.0.1",
        port=port,
        base_url=f"http://127.0.0.1:{port}/fhir",
        mongodb_uri=mongodb_uri,
        database=database,
        auth_enabled=False,
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
    db = mongo[settings.database]
    for name in db.list_collection_names():
        db[name].delete_many({})


@pytest.fixture
def client(server: RunningServer, clean_db: None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.settings.base_url, timeout=30) as c:
        yield c


def load_example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES_DIR / name).read_text())
    return data
