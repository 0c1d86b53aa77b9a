"""The per-process Consent cache follows the Consents' change events: a Consent recorded,
revoked or deleted through one server process governs the very next request another process
serves (both processes on one database), and requests look Consents up per patient."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.consent import ConsentEngine
from fhir_server.services import auth_settings
from interceptors.access import AccessInterceptor
from tests.conftest import RunningServer, make_settings
from tests.consent.conftest import PEOPLE, World, actor, consent, ids


def _engine(running: RunningServer) -> ConsentEngine:
    hooks = running.server.config.app.state.services.hooks  # type: ignore[attr-defined]
    for entries in hooks._hooks.values():
        for entry in entries:
            owner = getattr(entry.fn, "__self__", None)
            if isinstance(owner, AccessInterceptor) and owner.policy.consent is not None:
                return owner.policy.consent
    raise AssertionError("no Consent engine")


@pytest.fixture(scope="module")
def other_process(secure_server: RunningServer, mongodb_uri: str) -> Iterator[RunningServer]:
    """A second server on the secure server's database (its own cache, its own port)."""
    settings = make_settings(mongodb_uri, database=secure_server.settings.database, auth_enabled=True)
    with RunningServer(settings) as running:
        yield running


@pytest.fixture
def paul_elsewhere(other_process: RunningServer, tokens: dict[str, str],
                   world: World) -> Iterator[httpx.Client]:
    """Paul, talking to the other process (whose cache the test's clean-up cannot reach)."""
    _engine(other_process).cache.clear()
    # The tokens are minted for the secure server's audience: the other process has its own.
    scopes, _, user = PEOPLE["paul"]
    token = _mint_for(other_process, scopes, user)
    with httpx.Client(base_url=other_process.settings.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _mint_for(running: RunningServer, scopes: str, fhir_user: str) -> str:
    settings = running.settings

    async def work() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            return await mint_dev_token(client[settings.database], auth_settings(settings), scopes.split(),
                                        fhir_user=fhir_user)
        finally:
            await client.close()

    return asyncio.run(work())


def test_a_consent_recorded_in_one_process_governs_the_next_request_in_another(
        world: World, paul_elsewhere: httpx.Client) -> None:
    # The other process has cached that Anna holds no Consent.
    assert paul_elsewhere.get("/Task/anna-task").status_code == 200
    assert ids(paul_elsewhere.get("/Task", params={"patient": "anna"}).json()) == {"anna-task"}
    cid = world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    assert paul_elsewhere.get("/Task/anna-task").status_code == 403
    assert ids(paul_elsewhere.get("/Task", params={"patient": "anna"}).json()) == set()
    # Revoked (no longer active) in the first process: visible again at once in the other.
    revoked = world.anna.get(f"/Consent/{cid}").json()
    revoked["status"] = "inactive"
    assert world.anna.put(f"/Consent/{cid}", json=revoked).status_code == 200
    assert paul_elsewhere.get("/Task/anna-task").status_code == 200
    # Active again, then deleted.
    revoked["status"] = "active"
    assert world.anna.put(f"/Consent/{cid}", json=revoked).status_code == 200
    assert paul_elsewhere.get("/Task/anna-task").status_code == 403
    assert world.anna.delete(f"/Consent/{cid}").status_code == 200
    assert paul_elsewhere.get("/Task/anna-task").status_code == 200


def test_a_consent_moved_to_another_patient_follows_the_patient(
        world: World, paul_elsewhere: httpx.Client) -> None:
    cid = world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    assert paul_elsewhere.get("/Task/anna-task").status_code == 403
    assert paul_elsewhere.get("/Task/bob-task").status_code == 200
    moved = world.admin.get(f"/Consent/{cid}").json()
    moved["patient"] = {"reference": "Patient/bob"}
    assert world.admin.put(f"/Consent/{cid}", json=moved).status_code == 200
    assert paul_elsewhere.get("/Task/anna-task").status_code == 200
    assert paul_elsewhere.get("/Task/bob-task").status_code == 403


def test_consents_are_looked_up_once_per_patient(world: World, paul_elsewhere: httpx.Client,
                                                 other_process: RunningServer) -> None:
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    cache = _engine(other_process).cache
    assert paul_elsewhere.get("/Task/anna-task").status_code == 403
    before = cache.lookups
    for _ in range(3):
        assert paul_elsewhere.get("/Task/anna-task").status_code == 403
        assert ids(paul_elsewhere.get("/Task", params={"patient": "anna"}).json()) == set()
    assert cache.lookups == before
