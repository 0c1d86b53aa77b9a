"""A server with SMART auth on, over its own database, and a way to mint tokens for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.app import auth_settings
from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings
from tests.conftest import RunningServer, make_settings

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

    def mint_token(scope: str, *, patient: str | None = None, fhir_user: str | None = None) -> str:
        async def work() -> str:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user)
            finally:
                await client.close()

        return asyncio.run(work())

    return mint_token


@pytest.fixture
def secure(secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> Iterator[Callable[..., httpx.Client]]:
    """Returns a factory of HTTP clients, each bearing a token (or none)."""
    db = mongo[secure_server.settings.database]
    for name in db.list_collection_names():
        if not name.startswith("auth_"):  # keep the signing keys
            db[name].delete_many({})
    clients: list[httpx.Client] = []

    def client(token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=secure_server.settings.base_url, headers=headers, timeout=30)
        clients.append(c)
        return c

    yield client
    for c in clients:
        c.close()
