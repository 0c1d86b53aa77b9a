"""A server with SMART auth on (its own database) for the virtual visit, and helpers: the
world of one visit (a practitioner, a patient, a booked virtual Appointment written by plain
FHIR writes), tokens for each, and waiting for the session the engine records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import WorkflowSettings
from fhir_server.services import auth_settings
from telehealth.virtual_service import URL as VIRTUAL_SERVICE
from telehealth.virtual_service import read as read_service
from tests.conftest import RunningServer, make_settings
from tests.subscriptions.conftest import wait_until

DATABASE = "fhir_telehealth"
PRACTITIONER_SCOPES = "user/Appointment.rs user/Encounter.rs"
PATIENT_SCOPES = "patient/Appointment.rs patient/Encounter.rs"
ADMIN_SCOPES = "system/*.cruds system/AuditEvent.rs system/Provenance.rs"


def instant(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def virtual_appointment(patient: str, practitioner: str, start: datetime, *, status: str = "booked",
                        extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """A virtual Appointment as a client books it: the virtual service extension with no room yet."""
    return {
        "resourceType": "Appointment", "status": status,
        "extension": [{"url": VIRTUAL_SERVICE, "extension": [{"url": "maxParticipants", "valuePositiveInt": 4}]}],
        "start": instant(start), "end": instant(start + timedelta(minutes=30)),
        "participant": [{"actor": {"reference": r, "display": r}, "status": "accepted"}
                        for r in (patient, practitioner, *extra)],
    }


@dataclass
class TeleServer:
    running: RunningServer
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.running.settings.base_url

    def mint(self, scope: str, *, patient: str | None = None, fhir_user: str | None = None) -> str:
        settings = self.running.settings

        async def work() -> str:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user)
            finally:
                await client.close()

        # A thread of its own: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, work()).result()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.base, headers=headers, timeout=60)
        self.clients.append(c)
        return c

    def admin(self) -> httpx.Client:
        return self.client(self.mint(ADMIN_SCOPES))

    def practitioner(self, pid: str) -> httpx.Client:
        return self.client(self.mint(PRACTITIONER_SCOPES, fhir_user=f"Practitioner/{pid}"))

    def patient(self, pid: str) -> httpx.Client:
        return self.client(self.mint(PATIENT_SCOPES, patient=pid, fhir_user=f"Patient/{pid}"))

    def session_address(self, admin: httpx.Client, appointment_id: str) -> str:
        """Waits for the engine to record the visit's room; answers its address."""
        def recorded() -> str | None:
            service = read_service(admin.get(f"/Appointment/{appointment_id}").json())
            return service.address if service else None

        address: str = wait_until(recorded, 30, f"the session of Appointment/{appointment_id}")
        return address


@dataclass
class Visit:
    appointment: str
    patient: str
    practitioner: str


def make_visit(admin: httpx.Client, start: datetime | None = None, **kw: Any) -> Visit:
    """A practitioner, a patient and their booked virtual Appointment (plain FHIR writes)."""
    practitioner = admin.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "Osler"}]})
    patient = admin.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Chalmers"}]})
    assert practitioner.status_code == 201 and patient.status_code == 201
    doc = virtual_appointment(f"Patient/{patient.json()['id']}", f"Practitioner/{practitioner.json()['id']}",
                              start or datetime.now(UTC) + timedelta(minutes=10), **kw)
    booked = admin.post("/Appointment", json=doc)
    assert booked.status_code == 201, booked.text
    return Visit(booked.json()["id"], patient.json()["id"], practitioner.json()["id"])


def join(client: httpx.Client, appointment: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return client.post(f"/Appointment/{appointment}/$join", json=body) if body else \
        client.post(f"/Appointment/{appointment}/$join")


def output(response: httpx.Response) -> dict[str, Any]:
    """$join's Parameters as {name: value}."""
    out: dict[str, Any] = {}
    for p in response.json()["parameter"]:
        out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return out


def start_server(mongodb_uri: str, database: str, env: dict[str, str]) -> RunningServer:
    # With the shipped workflows: the virtual-visit workflow records each booked visit's room.
    settings = make_settings(mongodb_uri, database=database, auth_enabled=True,
                             workflows=WorkflowSettings(builtin=True))
    # The telehealth settings are read from the environment when the app starts.
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return RunningServer(settings).__enter__()


@pytest.fixture(scope="session")
def tele_server(mongodb_uri: str) -> Iterator[RunningServer]:
    running = start_server(mongodb_uri, DATABASE, {})
    yield running
    running.__exit__(None, None, None)


@pytest.fixture
def tele(tele_server: RunningServer) -> Iterator[TeleServer]:
    # Nothing is emptied: every test makes its own people and visits (the engine's
    # Subscription and its state stay as they are).
    server = TeleServer(tele_server)
    yield server
    for c in server.clients:
        c.close()



def closing_visit(tele: TeleServer, admin: httpx.Client) -> tuple[Visit, dict[str, Any]]:
    """A visit whose join window closes within seconds, and its patient's join (which expires
    with the window). On a slow machine the window may close before the join: then again with
    a wider margin."""
    for margin in (20, 40, 80):
        visit = make_visit(admin, datetime.now(UTC) - timedelta(hours=2) + timedelta(seconds=margin))
        tele.session_address(admin, visit.appointment)
        joined = join(tele.patient(visit.patient), visit.appointment)
        if joined.status_code == 200:
            return visit, output(joined)
    raise AssertionError(f"no join inside a window closing in {margin} s: {joined.text}")
