"""docs/subscriptions.md's walk-through, through HTTP with auth on: a rest-hook Subscription to
tools/hook_receiver.py, its handshake and notification as the receiver prints them, the replay
with `$events`; and what the doc answers client developers (owning scopes, the allow-list)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import SubscriptionSettings
from tests.conftest import Mint, RunningServer, free_port, make_settings
from tests.subscriptions.conftest import wait_until

RECEIVER = Path(__file__).resolve().parents[2] / "tools" / "hook_receiver.py"
ALLOWED = SubscriptionSettings(allowed_hosts=("127.0.0.1", "::1"), scan_interval=0.2, poll_interval=0.3,
                               lease_ttl=2.0, retry_initial=0.05, retry_max=0.25)


def _subscription(endpoint: str, owner: str, payload: bool = True) -> dict[str, Any]:
    channel = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = "application/fhir+json"
    return {"resourceType": "Subscription", "status": "requested", "reason": "Tasks for " + owner,
            "criteria": f"Task?owner=Practitioner/{owner}", "channel": channel}


@pytest.fixture(scope="module")
def walk_server(mongodb_uri: str) -> Iterator[RunningServer]:
    settings = make_settings(mongodb_uri, database="fhir_walkthrough", auth_enabled=True, subscriptions=ALLOWED)
    with RunningServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def walk_mint(walk_server: RunningServer) -> Mint:
    import asyncio

    from pymongo import AsyncMongoClient

    from fhir_server.app import auth_settings
    from fhir_server.auth.cli import mint_dev_token

    settings = walk_server.settings

    def mint(scope: str, *, patient: str | None = None, fhir_user: str | None = None) -> str:
        async def work() -> str:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user)
            finally:
                await client.close()

        return asyncio.run(work())

    return mint


@pytest.fixture
def hook_receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "receiver.out"
    with out.open("wb") as sink:
        process = subprocess.Popen([sys.executable, str(RECEIVER), str(port)], stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "receiving on" in out.read_text() or process.poll() is not None,
                       timeout=20, what="the receiver listening")
            assert process.poll() is None, out.read_text()
            yield port, out
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for(out: Path, text: str, count: int = 1) -> list[str]:
    def arrived() -> list[str] | None:
        lines = [line for line in out.read_text().splitlines() if text in line]
        return lines if len(lines) >= count else None

    found: list[str] = wait_until(arrived, timeout=30, what=f"{text!r} x{count} at the receiver")
    return found


def test_walkthrough(walk_server: RunningServer, walk_mint: Mint, hook_receiver: tuple[int, Path]) -> None:
    port, out = hook_receiver
    token = walk_mint("user/Subscription.cruds user/Task.cruds", fhir_user="Practitioner/coord-1")
    with httpx.Client(base_url=walk_server.settings.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        created = api.post("/Subscription", json=_subscription(f"http://127.0.0.1:{port}/hook", "coord-1"))
        assert created.status_code == 201, created.text
        sub = created.json()["id"]
        _wait_for(out, "POST /hook (-) empty body")  # the handshake
        wait_until(lambda: api.get(f"/Subscription/{sub}").json()["status"] == "active",
                   timeout=30, what=f"Subscription/{sub} active")
        task = api.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                       "owner": {"reference": "Practitioner/coord-1"},
                                       "description": "call the patient back"})
        assert task.status_code == 201
        task_id = task.json()["id"]
        [line] = _wait_for(out, f"Task {task_id}")
        assert "POST /hook (application/fhir+json)" in line

        events = api.get(f"/Subscription/{sub}/$events", params={"eventsSinceNumber": "1"})
        assert events.status_code == 200
        status = events.json()["entry"][0]["resource"]
        [event] = [p for p in status["parameter"] if p["name"] == "notification-event"]
        parts = {q["name"]: q for q in event["part"]}
        assert parts["event-number"]["valueString"] == "1"
        assert parts["focus"]["valueReference"]["reference"].endswith(f"/Task/{task_id}")
        api.delete(f"/Subscription/{sub}")


def test_which_scopes_own_a_subscription(walk_server: RunningServer, walk_mint: Mint) -> None:
    sub = _subscription("http://127.0.0.1:9/hook", "scopes-1", payload=False)
    outcomes = {}
    for scope in ("patient/Subscription.c", "patient/Subscription.cruds", "user/Subscription.c",
                  "user/Subscription.*", "system/Subscription.cruds"):
        token = walk_mint(scope, patient="p1", fhir_user="Practitioner/scopes-1")
        response = httpx.post(f"{walk_server.settings.base_url}/Subscription", json=sub, timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        outcomes[scope] = response.status_code
        if response.status_code == 201:
            httpx.delete(f"{walk_server.settings.base_url}/Subscription/{response.json()['id']}", timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    # A patient-context token keeps its own Subscriptions (the portal's live views); what they
    # deliver is read as that owner, so a patient/ token learns only of her own compartment.
    assert outcomes == {"patient/Subscription.c": 201, "patient/Subscription.cruds": 201,
                        "user/Subscription.c": 201, "user/Subscription.*": 201, "system/Subscription.cruds": 201}


@pytest.mark.parametrize(("endpoint", "status"), [
    ("http://127.0.0.1:9/hook", 201),     # an allow-listed address itself, over http
    ("https://localhost:9/hook", 201),    # a name resolving to them, over https
    ("http://localhost:9/hook", 422),     # ... but not over http: the name itself is not listed
])
def test_an_allow_listed_address_and_a_name_resolving_to_it(
    walk_server: RunningServer, walk_mint: Mint, endpoint: str, status: int
) -> None:
    token = walk_mint("system/Subscription.cruds")
    auth = {"Authorization": f"Bearer {token}"}
    response = httpx.post(f"{walk_server.settings.base_url}/Subscription", headers=auth, timeout=30,
                          json=_subscription(endpoint, "allow-1", payload=False))
    assert response.status_code == status, response.text
    if status == 201:
        httpx.delete(f"{walk_server.settings.base_url}/Subscription/{response.json()['id']}", headers=auth, timeout=30)
    else:
        assert "FHIR_SUBSCRIPTION_ALLOWED_HOSTS" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000/hook", "https://127.0.0.1:9000/hook",
                                      "http://localhost:9000/hook"])
def test_a_loopback_endpoint_refused_names_the_setting(client: httpx.Client, endpoint: str) -> None:
    """The default server allows no internal endpoint: its 422 says how to allow one."""
    response = client.post("/Subscription", json=_subscription(endpoint, "loop-1", payload=False))
    assert response.status_code == 422
    said = response.json()["issue"][0]["diagnostics"]
    assert "FHIR_SUBSCRIPTION_ALLOWED_HOSTS" in said and "comma-separated" in said
