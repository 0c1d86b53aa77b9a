"""A SMART-enabled server for messaging, three consuming systems and the people of a thread.

The EHR, the patient portal and the coordinator dashboard are three clients with their own
client_ids. Dr. Gray (the GP, at the GP practice) uses the EHR; Anna (the patient) and her
daughter Clara use the portal; Dr. Chen takes part through Anna's CareTeam; Dr. Paul takes no
part. The server keeps its database across tests (its workflow's in-process Subscription and
timers live there), so every test makes its own people under a unique suffix.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import WorkflowSettings
from fhir_server.messaging.settings import GRACE_PERIOD
from fhir_server.services import auth_settings
from tests.conftest import RunningServer
from tests.subscriptions.conftest import fast_settings

GRACE = 1.5  # seconds: the tests' grace period
TAG = "http://fhir.care-coord.example/CodeSystem/messaging"
TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/communication-unrendered"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SYSTEMS = ("ehr", "portal", "dashboard")


@pytest.fixture(scope="session")
def messaging_server(mongodb_uri: str) -> Iterator[RunningServer]:
    before = os.environ.get(GRACE_PERIOD)
    os.environ[GRACE_PERIOD] = str(GRACE)
    try:
        with RunningServer(fast_settings(mongodb_uri, "fhir_messaging", auth_enabled=True,
                                                   workflows=WorkflowSettings(builtin=True))) as running:
            yield running
    finally:
        if before is None:
            os.environ.pop(GRACE_PERIOD, None)
        else:
            os.environ[GRACE_PERIOD] = before


def ref(value: str) -> dict[str, str]:
    return {"reference": value}


@dataclass
class World:
    server: RunningServer
    u: str
    clients: list[httpx.Client] = field(default_factory=list)

    # ------------------------------------------------------------ tokens and clients
    def token(self, scope: str, *, client_id: str, patient: str | None = None,
              fhir_user: str | None = None) -> str:
        settings = self.server.settings

        async def work() -> str:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user, client_id=client_id)
            finally:
                await client.close()

        return asyncio.run(work())

    def client(self, token: str) -> httpx.Client:
        c = httpx.Client(base_url=self.server.settings.base_url, timeout=60,
                         headers={"Authorization": f"Bearer {token}"})
        self.clients.append(c)
        return c

    def system(self, name: str) -> httpx.Client:
        """A consuming system's own backend client (system/ scopes)."""
        return self.client(self.token("system/*.cruds", client_id=name))

    def person(self, who: str, via: str) -> httpx.Client:
        """A person through a system: the GP in the EHR, Anna or Clara in the portal, ..."""
        return self.client(self._person_token(who, via))

    def _person_token(self, who: str, via: str) -> str:
        scope, patient, user = self.people[who]
        return self.token(scope, client_id=via, patient=patient, fhir_user=user)

    @property
    def people(self) -> dict[str, tuple[str, str | None, str]]:
        u = self.u
        return {
            "gray": ("user/*.cruds", None, f"Practitioner/gray{u}"),
            "chen": ("user/*.cruds", None, f"Practitioner/chen{u}"),
            "paul": ("user/*.cruds", None, f"Practitioner/paul{u}"),
            "anna": ("patient/*.cruds", f"anna{u}", f"Patient/anna{u}"),
            "clara": ("patient/*.rs patient/Communication.cu", f"anna{u}", f"RelatedPerson/clara{u}"),
        }

    def ref(self, who: str) -> str:
        return self.people[who][2]

    # ------------------------------------------------------------ the directory
    def directory(self) -> list[dict[str, Any]]:
        u = self.u
        return [
            *({"resourceType": "Practitioner", "id": f"{p}{u}", "name": [{"family": p.title()}]}
              for p in ("gray", "chen", "paul")),
            {"resourceType": "Location", "id": f"gp-practice{u}", "name": "GP practice"},
            {"resourceType": "PractitionerRole", "id": f"gray-gp{u}", "practitioner": ref(f"Practitioner/gray{u}"),
             "location": [ref(f"Location/gp-practice{u}")]},
            {"resourceType": "Patient", "id": f"anna{u}", "name": [{"family": "Adams", "given": ["Anna"]}]},
            {"resourceType": "RelatedPerson", "id": f"clara{u}", "patient": ref(f"Patient/anna{u}"),
             "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                           "code": "DAU"}]}]},
            {"resourceType": "CareTeam", "id": f"team{u}", "status": "active", "subject": ref(f"Patient/anna{u}"),
             "participant": [{"member": ref(f"Practitioner/chen{u}")}]},
        ]

    def thread_header(self) -> dict[str, Any]:
        """A thread about Anna's blood pressure: the GP writes to Anna, Clara and the team."""
        return {"resourceType": "Communication", "status": "in-progress",
                "subject": ref(self.ref("anna")),
                "topic": {"text": "Blood pressure readings"},
                "recipient": [ref(self.ref("anna")), ref(self.ref("clara")), ref(f"CareTeam/team{self.u}")]}

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture
def world(messaging_server: RunningServer) -> Iterator[World]:
    w = World(messaging_server, uuid.uuid4().hex[:8])
    admin = w.system("dashboard")
    for resource in w.directory():
        reply = admin.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert reply.status_code == 201, reply.text
    yield w
    # No Subscription of this test keeps delivering into the next one.
    for entry in admin.get("/Subscription", params={"criteria": TOPIC, "_count": "500"}).json().get("entry", []):
        admin.delete(f"/Subscription/{entry['resource']['id']}")
    w.close()


def message(thread_id: str, text: str, subject: str | None = None, **extra: Any) -> dict[str, Any]:
    """A message of the thread; `subject`: the thread's patient (a patient/ token names it)."""
    return {"resourceType": "Communication", "status": "completed",
            "partOf": [ref(f"Communication/{thread_id}")],
            **({"subject": ref(subject)} if subject else {}),
            "payload": [{"contentString": text}], **extra}


def cursor_parameters(participant: str, message_id: str, *, source: str | None = None,
                      recorded_at: str | None = None) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "participant", "valueReference": ref(participant)},
        {"name": "message", "valueReference": ref(f"Communication/{message_id}")},
    ]
    if source is not None:
        params.append({"name": "source", "valueString": source})
    if recorded_at is not None:
        params.append({"name": "recordedAt", "valueDateTime": recorded_at})
    return {"resourceType": "Parameters", "parameter": params}


def unrendered_subscription(endpoint: str, participant: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested", "reason": "alerts for a participant", "criteria": TOPIC,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                     "valueString": f"participant={participant}"}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                "valueCode": "full-resource"}]}},
    }


def part(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters.get("parameter", []) if p["name"] == name]
