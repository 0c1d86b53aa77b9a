"""A scheduling server (the built-in scheduling workflows, fast subscriptions and timers) on
its own database, and helpers that build a small practice: Practitioners with Schedules and
15-minute Slots, a Patient, a virtual Location."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import WorkflowSettings
from tests.conftest import RunningServer, make_settings
from tests.subscriptions.conftest import FAST

Doc = dict[str, Any]
DAY = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)


def definitions(tmp: Path, hold: str) -> Path:
    path = tmp / f"workflows-{hold}.yaml"
    path.write_text(f"defaults:\n  scheduling:\n    holdTimeout: {hold}\n"
                    '    bookingLink: "https://portal.example/book?slot={slot}"\norganizations: {}\n')
    return path


def scheduling_server(mongodb_uri: str, tmp: Path, hold: str) -> RunningServer:
    settings = make_settings(mongodb_uri, database=f"fhir_sched_{uuid.uuid4().hex[:8]}", subscriptions=FAST,
                             workflows=WorkflowSettings(timer_poll=0.05, definitions=definitions(tmp, hold)),
                             extra={"provenance": "on", "audit": "on"})
    return RunningServer(settings)


@pytest.fixture(scope="session")
def sched_server(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with scheduling_server(mongodb_uri, tmp_path_factory.mktemp("sched"), "PT10M") as running:
        yield running


@pytest.fixture
def api(sched_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sched_server.settings.base_url, timeout=60) as client:
        yield client


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def created(api: httpx.Client, resource: Doc) -> Doc:
    response = api.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    body: Doc = response.json()
    return body


class Practice:
    """One test's own practitioners, schedules and slots (unique ids: no clean-up needed)."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        self.tag = uuid.uuid4().hex[:8]
        self.patient = created(api, {"resourceType": "Patient", "name": [{"family": f"P{self.tag}"}]})["id"]
        self.video = created(api, {"resourceType": "Location", "status": "active", "name": "Video room",
                                   "physicalType": {"coding": [{
                                       "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                                       "code": "vi"}]}})["id"]
        self.clinic = created(api, {"resourceType": "Location", "status": "active", "name": "Clinic"})["id"]

    def practitioner(self, *, virtual: bool = True, slots: int = 4, start: datetime = DAY) -> tuple[str, list[str]]:
        """A Practitioner with a Schedule (virtual or at the clinic) and `slots` free 15-minute Slots."""
        pid = created(self.api, {"resourceType": "Practitioner", "name": [{"family": f"D{self.tag}"}]})["id"]
        location = self.video if virtual else self.clinic
        schedule = created(self.api, {
            "resourceType": "Schedule", "active": True,
            "actor": [{"reference": f"Practitioner/{pid}"}, {"reference": f"Location/{location}"}],
            "serviceType": [{"coding": [{"system": "urn:test:service", "code": f"consult-{self.tag}"}]}]})["id"]
        ids = []
        for n in range(slots):
            begin = start + timedelta(minutes=15 * n)
            ids.append(created(self.api, {
                "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule}"}, "status": "free",
                "start": iso(begin), "end": iso(begin + timedelta(minutes=15))})["id"])
        return pid, ids

    def find(self, **params: Any) -> list[Doc]:
        query = {"start": iso(DAY), "end": iso(DAY + timedelta(hours=8)), **params}
        response = self.api.get("/Appointment/$find", params=query)
        assert response.status_code == 200, response.text
        return [e["resource"] for e in response.json().get("entry", [])]


def parameters(**named: Any) -> Doc:
    parts = []
    for name, value in named.items():
        name = name.replace("_", "-")
        if isinstance(value, dict):
            parts.append({"name": name, "resource": value})
        elif isinstance(value, bool):
            parts.append({"name": name, "valueBoolean": value})
        elif name == "appointment-reference":
            parts.append({"name": name, "valueReference": {"reference": value}})
        else:
            parts.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": parts}


def appointment_of(response: httpx.Response) -> Doc:
    body = response.json()
    assert body["resourceType"] == "Bundle", body
    resource: Doc = body["entry"][0]["resource"]
    return resource


def slot_status(api: httpx.Client, slot_id: str) -> str:
    status: str = api.get(f"/Slot/{slot_id}").json()["status"]
    return status
