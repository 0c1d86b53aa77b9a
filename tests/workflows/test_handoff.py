"""Hand-off over HTTP with SMART on, the real database and the built-in workflow: accepted,
rejected, timed out (PT2S for Organization/north), requested by someone who may not (403),
handed to an inactive PractitionerRole (the pool gets it); effects counted by identifier,
exactly once across redeliveries and racing answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings, WorkflowSettings
from fhir_server.handoffs import TASK_CODES
from fhir_server.services import auth_settings, build_services
from subscriptions.channels import Notification
from tests.conftest import RunningServer, make_settings
from tests.subscriptions.receiver import Receiver
from tests.workflows.toy import FAST, unique, wait_for
from workflows import EFFECT_SYSTEM, Engine
from workflows.handoff import NAME
from workflows.timers import Timer

Doc = dict[str, Any]
NURSE = {"coding": [{"system": "http://snomed.info/sct", "code": "224535009", "display": "Registered nurse"}]}
COORDINATOR = {"coding": [{"system": "http://snomed.info/sct", "code": "768820003", "display": "Care coordinator"}]}
SECTIONS = "http://fhir.care-coord.example/CodeSystem/handoff-note-section"
DEFINITIONS = """
defaults:
  handoff:
    timeout: PT4H
organizations:
  Organization/north:
    handoff:
      timeout: PT2S
  Organization/east:
    handoff:
      escalateTo: [PractitionerRole/east-desk]
"""


@pytest.fixture(scope="module")
def running(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    definitions = Path(tmp_path_factory.mktemp("handoff")) / "workflows.yaml"
    definitions.write_text(DEFINITIONS)
    settings = make_settings(mongodb_uri, database=unique("fhir_handoff_"), auth_enabled=True,
                             subscriptions=replace(FAST, allowed_hosts=("127.0.0.1",)), extra={"provenance": "on", "audit": "on"},
                             workflows=WorkflowSettings(timer_poll=0.05, definitions=definitions))
    with RunningServer(settings) as server:
        yield server


def mint(settings: Settings, scope: str, fhir_user: str | None = None) -> str:
    async def work() -> str:
        client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
        try:
            return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                        fhir_user=fhir_user)
        finally:
            await client.close()

    return asyncio.run(work())


class World:
    """Two organizations' people around one patient's CareTeam, and a Task Alice owns. The
    CareTeam is managed by `organization`: south waits the default PT4H for an answer, north
    PT2S, east escalates to its desk."""

    def __init__(self, running: RunningServer, organization: str = "south") -> None:
        self.running = running
        self.settings = running.settings
        self.u = u = unique()
        self.clients: list[httpx.Client] = []
        self.admin = self.client("system/*.cruds system/Provenance.rs system/AuditEvent.rs")
        self.patient, self.team = f"Patient/{u}", f"CareTeam/{u}"
        self.alice, self.bob, self.carol = f"Practitioner/{u}-alice", f"Practitioner/{u}-bob", f"Practitioner/{u}-carol"
        self.mallory, self.dave = f"Practitioner/{u}-mallory", f"Practitioner/{u}-dave"
        self.bob_role, self.dave_role = f"PractitionerRole/{u}-bob", f"PractitionerRole/{u}-dave"
        for org in ("north", "south", "east"):
            self.put({"resourceType": "Organization", "id": org, "name": org})
        self.put({"resourceType": "Patient", "id": u})
        for who in (self.alice, self.bob, self.carol, self.mallory, self.dave):
            self.put({"resourceType": "Practitioner", "id": who.split("/")[1]})
        self.put({"resourceType": "PractitionerRole", "id": f"{u}-bob", "active": True,
                  "practitioner": {"reference": self.bob}, "organization": {"reference": "Organization/north"}})
        self.put({"resourceType": "PractitionerRole", "id": f"{u}-dave", "active": False,
                  "practitioner": {"reference": self.dave}, "organization": {"reference": "Organization/south"}})
        self.put({"resourceType": "CareTeam", "id": u, "status": "active", "subject": {"reference": self.patient},
                  "managingOrganization": [{"reference": f"Organization/{organization}"}],
                  "participant": [{"role": [NURSE], "member": {"reference": self.alice}},
                                  {"role": [NURSE], "member": {"reference": self.bob_role}},
                                  {"role": [COORDINATOR], "member": {"reference": self.carol}}]})
        self.focus = f"Task/{u}-work"
        self.put({"resourceType": "Task", "id": f"{u}-work", "status": "in-progress", "intent": "order",
                  "for": {"reference": self.patient}, "owner": {"reference": self.alice},
                  "description": "Titrate insulin"})
        self.as_alice = self.user(self.alice)
        self.as_bob = self.user(self.bob)

    def client(self, scope: str, fhir_user: str | None = None) -> httpx.Client:
        token = mint(self.settings, scope, fhir_user)
        c = httpx.Client(base_url=self.settings.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        self.clients.append(c)
        return c

    def user(self, who: str) -> httpx.Client:
        return self.client("user/*.cruds", who)

    def put(self, resource: Doc) -> None:
        response = self.admin.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text

    def get(self, reference: str) -> Doc:
        response = self.admin.get(f"/{reference}")
        assert response.status_code == 200, response.text
        resource: Doc = response.json()
        return resource

    def search(self, path: str, **params: str) -> list[Doc]:
        bundle = self.admin.get(path, params={**params, "_count": "100"}).json()
        return [e["resource"] for e in bundle.get("entry", [])]

    def handoff(self, owner: str, requester: str | None = None, **extra: Any) -> Doc:
        return {"resourceType": "Task", "status": "requested", "intent": "order",
                "code": {"coding": [{"system": TASK_CODES, "code": "handoff"}]},
                "focus": {"reference": self.focus}, "for": {"reference": self.patient},
                "requester": {"reference": requester or self.alice}, "owner": {"reference": owner},
                "input": [{"type": {"coding": [{"system": SECTIONS, "code": "i-pass-illness-severity"}]},
                           "valueString": "watcher"},
                          {"type": {"coding": [{"system": SECTIONS, "code": "i-pass-action-list"}]},
                           "valueString": "recheck glucose at 22:00"}], **extra}

    def request(self, api: httpx.Client, owner: str, requester: str | None = None) -> Doc:
        response = api.post("/Task", json=self.handoff(owner, requester))
        assert response.status_code == 201, response.text
        created: Doc = response.json()
        return created

    def answer(self, api: httpx.Client, handoff: Doc, status: str, **extra: Any) -> httpx.Response:
        current = self.get(f"Task/{handoff['id']}")
        current.update(status=status, **extra)
        return api.put(f"/Task/{handoff['id']}", json=current)

    def effects(self, rtype: str, handoff_id: str) -> list[Doc]:
        """The engine's effects of type `rtype` about this hand-off, by effect identifier."""
        found = self.search(f"/{rtype}", identifier=f"{EFFECT_SYSTEM}|", **{"based-on": f"Task/{handoff_id}"})
        return [r for r in found if any(i.get("system") == EFFECT_SYSTEM and i["value"].startswith(f"{NAME}/")
                                        for i in r.get("identifier", []))]

    def provenance(self, version: str) -> list[Doc]:
        """The Provenance records of one version (`Type/id/_history/v`)."""
        found = self.search("/Provenance", target=version.split("/_history/")[0])
        return [p for p in found if p["target"][0]["reference"] == version]

    def versions(self, reference: str) -> list[Doc]:
        bundle = self.admin.get(f"/{reference}/_history").json()
        return [e["resource"] for e in bundle.get("entry", [])]

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture
def world(running: RunningServer) -> Iterator[World]:
    w = World(running)
    yield w
    w.close()


def refused(response: httpx.Response, status: int, rule: str) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert rule in outcome["issue"][0]["diagnostics"], outcome


def timer(running: RunningServer, handoff_id: str) -> Doc | None:
    settings = running.settings
    with MongoClient(settings.mongodb_uri, tz_aware=True) as client:
        doc: Doc | None = client[settings.database]["timers"].find_one({"_id": f"{NAME}/Task/{handoff_id}/answer"})
        return doc


def in_second_process(running: RunningServer, work: Callable[[Engine], Awaitable[None]]) -> None:
    """Runs `work` with an engine of its own on the same database: a second server process."""
    async def scenario() -> None:
        services = await build_services(running.settings)
        try:
            assert services.workflows is not None
            await work(services.workflows)
        finally:
            await services.close()

    asyncio.run(scenario())


def redeliver(running: RunningServer, version: Doc) -> None:
    """Hands the engine the same event again (what at-least-once delivery may do)."""
    note = Notification(f"in-process-{NAME}", None, 1, datetime.now(UTC), "update", "Task",
                        f"Task/{version['id']}", version)

    async def work(engine: Engine) -> None:
        await engine.handle(engine.workflows[NAME], note)

    in_second_process(running, work)


def refire(running: RunningServer, key: str, payload: Doc) -> None:
    """Fires the same timer again (what a runner whose lease ran out would do)."""
    async def work(engine: Engine) -> None:
        fire = engine._timer_handler(NAME)
        assert fire is not None
        await fire(Timer(key, NAME, datetime.now(UTC), payload, 2))

    in_second_process(running, work)


def test_a_handoff_accepted_moves_the_focus_task_in_one_transaction(world: World) -> None:
    handoff = world.request(world.as_alice, world.bob_role)
    wait_for(lambda: (timer(world.running, handoff["id"]) or {}).get("status") == "pending")
    assert world.answer(world.as_bob, handoff, "accepted").status_code == 200

    wait_for(lambda: world.get(f"Task/{handoff['id']}")["status"] == "completed")
    focus = world.get(world.focus)
    assert focus["owner"] == {"reference": world.bob_role}
    done = world.get(f"Task/{handoff['id']}")
    assert done["output"][0]["valueReference"] == {"reference": world.bob_role}
    # One write of each: the focus Task went from Alice to Bob in one version.
    assert [v["meta"]["versionId"] for v in world.versions(world.focus)] == ["2", "1"]
    assert [v["status"] for v in world.versions(f"Task/{handoff['id']}")] == ["completed", "accepted", "requested"]
    told = world.effects("Communication", handoff["id"])
    assert len(told) == 1 and told[0]["recipient"] == [{"reference": world.alice}]
    assert told[0]["sender"] == {"reference": "Device/coordination-engine"}
    assert (timer(world.running, handoff["id"]) or {})["status"] == "cancelled"

    # The engine's identity: Provenance agent = its Device, entity = the accepted version.
    accepted = f"Task/{handoff['id']}/_history/2"
    provenance = world.provenance(f"{world.focus}/_history/2")
    assert len(provenance) == 1
    assert provenance[0]["agent"][0]["who"] == {"reference": "Device/coordination-engine"}
    assert provenance[0]["entity"] == [{"role": "source", "what": {"reference": accepted}}]
    # One AuditEvent per effect (the focus update, the completion, the Communication), each
    # naming the engine as requestor and the accepted version as the trigger.
    audited = [a for a in world.search("/AuditEvent", entity=f"Task/{handoff['id']}")
               if a["agent"][0].get("who") == {"reference": "Device/coordination-engine"}]
    assert sorted(a["entity"][0]["what"]["reference"] for a in audited) == sorted(
        [f"{world.focus}/_history/2", f"Task/{handoff['id']}/_history/3", f"Communication/{told[0]['id']}/_history/1"])
    assert all(a["entity"][1]["what"] == {"reference": accepted} for a in audited)

    # A redelivery of the accepted event changes nothing: exactly once.
    redeliver(world.running, world.versions(f"Task/{handoff['id']}")[1])
    assert len(world.effects("Communication", handoff["id"])) == 1
    assert len(world.versions(world.focus)) == 2 and len(world.versions(f"Task/{handoff['id']}")) == 3
    # A finished hand-off no longer changes.
    refused(world.answer(world.as_bob, handoff, "rejected", statusReason={"text": "changed my mind"}),
            409, "handoff-transition")


def test_a_handoff_rejected_leaves_the_focus_task_with_its_owner(world: World) -> None:
    handoff = world.request(world.as_alice, world.bob_role)
    refused(world.answer(world.as_bob, handoff, "rejected"), 422, "handoff-reject-reason")
    response = world.answer(world.as_bob, handoff, "rejected", statusReason={"text": "off shift in 10 minutes"})
    assert response.status_code == 200, response.text

    wait_for(lambda: len(world.effects("Communication", handoff["id"])) == 1)
    told = world.effects("Communication", handoff["id"])[0]
    assert told["recipient"] == [{"reference": world.alice}]
    assert "off shift in 10 minutes" in told["payload"][0]["contentString"]
    wait_for(lambda: (timer(world.running, handoff["id"]) or {}).get("status") == "cancelled")
    assert world.get(world.focus)["owner"] == {"reference": world.alice}
    assert len(world.versions(world.focus)) == 1

    redeliver(world.running, world.get(f"Task/{handoff['id']}"))
    assert len(world.effects("Communication", handoff["id"])) == 1
    refused(world.answer(world.as_bob, handoff, "accepted"), 409, "handoff-transition")


def test_a_handoff_unanswered_for_pt2s_goes_to_the_care_teams_pool(running: RunningServer) -> None:
    world = World(running, organization="north")
    try:
        unanswered(world)
    finally:
        world.close()


def unanswered(world: World) -> None:
    handoff = world.request(world.as_alice, world.bob_role)
    # Organization/north (the CareTeam's managing organization) waits PT2S, not the default PT4H.
    wait_for(lambda: timer(world.running, handoff["id"]) is not None)
    scheduled = timer(world.running, handoff["id"])
    assert scheduled is not None
    requested_at = datetime.fromisoformat(handoff["meta"]["lastUpdated"].replace("Z", "+00:00"))
    assert abs((scheduled["due"] - requested_at).total_seconds() - 2.0) < 0.01  # due PT2S after the request

    wait_for(lambda: world.get(f"Task/{handoff['id']}")["status"] == "failed", timeout=30)
    failed = world.get(f"Task/{handoff['id']}")
    assert failed["statusReason"]["text"] == "no answer within PT2S"
    focus = world.get(world.focus)
    assert "owner" not in focus and focus["performerType"] == [NURSE]  # Bob's role in the team
    told = world.effects("Communication", handoff["id"])
    tasks = world.effects("Task", handoff["id"])
    assert len(told) == 1 and told[0]["recipient"] == [{"reference": world.carol}]
    assert len(tasks) == 1 and tasks[0]["owner"] == {"reference": world.carol}
    assert tasks[0]["code"]["coding"][0]["code"] == "handoff-escalation"
    assert tasks[0]["focus"] == {"reference": world.focus}
    # Provenance names the version the timer waited about.
    provenance = world.provenance(f"Task/{tasks[0]['id']}/_history/1")
    assert provenance[0]["entity"] == [{"role": "source", "what": {"reference": f"Task/{handoff['id']}/_history/1"}}]

    # Too late: the hand-off is over. A re-fired timer changes nothing.
    refused(world.answer(world.as_bob, handoff, "accepted"), 409, "handoff-transition")
    refire(world.running, f"{NAME}/Task/{handoff['id']}/answer", scheduled["payload"])
    assert len(world.effects("Communication", handoff["id"])) == 1
    assert len(world.effects("Task", handoff["id"])) == 1
    assert len(world.versions(world.focus)) == 2


def test_only_the_owner_or_a_coordinator_may_request_a_handoff(world: World) -> None:
    outsider = world.user(world.mallory)
    refused(outsider.post("/Task", json=world.handoff(world.bob_role)), 403, "handoff-requester")
    # Bob is on the team, but does not own the Task.
    refused(world.as_bob.post("/Task", json=world.handoff(world.carol)), 403, "handoff-requester")
    # A client without a user is no party.
    refused(world.admin.post("/Task", json=world.handoff(world.bob_role)), 403, "handoff-requester")
    assert world.search("/Task", focus=world.focus) == []  # nothing stored

    # The owner must name themself (or a coordinator) as the requester.
    refused(world.as_alice.post("/Task", json=world.handoff(world.bob_role, world.mallory)), 422, "handoff-requester")
    refused(world.as_alice.post("/Task", json={**world.handoff(world.bob_role), "focus": {"reference": world.patient}}),
            422, "handoff-shape")
    # The coordinator may.
    by_carol = world.request(world.user(world.carol), world.bob_role, world.carol)

    # Only the proposed owner answers; only the engine completes.
    refused(world.answer(outsider, by_carol, "accepted"), 403, "handoff-answer")
    refused(world.answer(world.as_alice, by_carol, "accepted"), 403, "handoff-answer")
    refused(world.answer(world.as_bob, by_carol, "failed"), 403, "handoff-engine")
    refused(world.answer(world.as_bob, by_carol, "completed"), 409, "handoff-transition")
    refused(world.answer(world.as_bob, by_carol, "cancelled"), 403, "handoff-cancel")
    changed = {**world.get(f"Task/{by_carol['id']}"), "owner": {"reference": world.mallory}}
    refused(world.user(world.carol).put(f"/Task/{by_carol['id']}", json=changed), 422, "handoff-shape")
    notes = world.get(f"Task/{by_carol['id']}")
    notes["input"][1]["valueString"] = "recheck glucose at 23:00"
    refused(outsider.put(f"/Task/{by_carol['id']}", json=notes), 403, "handoff-party")
    assert world.as_bob.put(f"/Task/{by_carol['id']}", json=notes).status_code == 200
    refused(outsider.delete(f"/Task/{by_carol['id']}"), 403, "handoff-cancel")
    assert world.answer(world.user(world.carol), by_carol, "cancelled").status_code == 200
    wait_for(lambda: (timer(world.running, by_carol["id"]) or {}).get("status") == "cancelled")
    assert world.get(world.focus)["owner"] == {"reference": world.alice}


def test_nasty_handoff_requests_are_refused_and_store_nothing(world: World) -> None:
    good = world.handoff(world.bob_role)
    other = world.request(world.as_alice, world.carol)  # one open hand-off, kept
    cases: list[tuple[Doc, int, str]] = [
        ({**good, "owner": {"reference": 5}}, 400, ""),
        ({k: v for k, v in good.items() if k != "owner"}, 422, "handoff-shape"),
        ({**good, "owner": {"reference": "Patient/" + world.u}}, 422, "handoff-shape"),
        ({**good, "owner": {"reference": world.alice}}, 422, "handoff-shape"),
        ({**good, "focus": {"reference": "Task/"}}, 422, "handoff-shape"),
        ({**good, "focus": {"reference": "Task/../" + world.focus}}, 422, "handoff-shape"),
        ({**good, "focus": {"reference": f"Task/{other['id']}"}}, 422, "handoff-shape"),
        ({**good, "focus": {"reference": "Task/no-such-task"}}, 422, "handoff-shape"),
        ({**good, "for": {"reference": "Patient/someone-else"}}, 422, "handoff-shape"),
        ({k: v for k, v in good.items() if k != "requester"}, 422, "handoff-requester"),
        ({**good, "status": "accepted"}, 409, "handoff-transition"),
        ({**good, "status": "completed"}, 409, "handoff-transition"),
    ]
    for body, status, rule in cases:
        response = world.as_alice.post("/Task", json=body)
        assert response.status_code == status, (body.get("focus"), body.get("owner"), body.get("for"), response.text[:300])
        assert response.json()["resourceType"] == "OperationOutcome"
        if rule:
            assert rule in response.json()["issue"][0]["diagnostics"], response.text
    assert [t["id"] for t in world.search("/Task", focus=world.focus)] == [other["id"]]
    # A hand-off stays a hand-off.
    changed = {**world.get(f"Task/{other['id']}"), "code": {"text": "something else"}}
    refused(world.as_alice.put(f"/Task/{other['id']}", json=changed), 422, "handoff-shape")


def test_a_team_or_an_organization_answers_through_its_members(world: World) -> None:
    to_team = world.request(world.as_alice, world.team)
    refused(world.answer(world.user(world.mallory), to_team, "accepted"), 403, "handoff-answer")
    refused(world.answer(world.user(world.dave), to_team, "accepted"), 403, "handoff-answer")  # not a member
    assert world.answer(world.as_bob, to_team, "accepted").status_code == 200  # a member, by his role
    wait_for(lambda: world.get(world.focus).get("owner") == {"reference": world.team})

    # Bob (PractitionerRole at Organization/north, active) answers for north; Dave's role at
    # south is inactive, so Dave answers for nobody.
    to_north = world.request(world.user(world.carol), "Organization/north", world.carol)
    refused(world.answer(world.user(world.dave), to_north, "accepted"), 403, "handoff-answer")
    assert world.answer(world.as_bob, to_north, "accepted").status_code == 200
    wait_for(lambda: world.get(world.focus).get("owner") == {"reference": "Organization/north"})


def test_an_inactive_practitioner_role_is_handed_nothing_the_pool_is(world: World) -> None:
    handoff = world.request(world.as_alice, world.dave_role)
    wait_for(lambda: world.get(f"Task/{handoff['id']}")["status"] == "failed")
    assert "inactive" in world.get(f"Task/{handoff['id']}")["statusReason"]["text"]
    focus = world.get(world.focus)
    assert "owner" not in focus and focus["performerType"] == [NURSE]  # Alice's role: Dave has none here
    assert len(world.effects("Task", handoff["id"])) == 1
    assert len(world.effects("Communication", handoff["id"])) == 1
    # Dave's role is never handed the Task, nor asked: no timer waits for an answer.
    assert timer(world.running, handoff["id"]) is None
    refused(world.answer(world.user(world.dave), handoff, "accepted"), 409, "handoff-transition")


def test_an_organizations_escalation_target_is_the_coordinator(running: RunningServer) -> None:
    world = World(running, organization="east")  # escalateTo: [PractitionerRole/east-desk]
    try:
        world.put({"resourceType": "PractitionerRole", "id": "east-desk", "active": True,
                   "organization": {"reference": "Organization/east"}})
        handoff = world.request(world.as_alice, world.dave_role)
        wait_for(lambda: world.get(f"Task/{handoff['id']}")["status"] == "failed")
        tasks = world.effects("Task", handoff["id"])
        assert len(tasks) == 1 and tasks[0]["owner"] == {"reference": "PractitionerRole/east-desk"}
        told = world.effects("Communication", handoff["id"])
        assert len(told) == 1 and told[0]["recipient"] == [{"reference": "PractitionerRole/east-desk"}]
    finally:
        world.close()


def test_sixteen_racing_accepts_transfer_once(world: World) -> None:
    handoff = world.request(world.as_alice, world.bob_role)
    body = {**world.get(f"Task/{handoff['id']}"), "status": "accepted"}

    def accept(_: int) -> int:
        return world.as_bob.put(f"/Task/{handoff['id']}", json=body, headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(accept, range(16)))
    assert statuses == [200] + [412] * 15
    wait_for(lambda: world.get(f"Task/{handoff['id']}")["status"] == "completed")
    assert world.get(world.focus)["owner"] == {"reference": world.bob_role}
    assert len(world.effects("Communication", handoff["id"])) == 1
    assert len(world.versions(world.focus)) == 2


def test_an_answer_racing_the_time_out_has_one_outcome(world: World) -> None:
    """The accept and the timer (fired by a second process) at the same moment: either the
    transfer or the escalation happens, never both, never half."""
    for _ in range(3):
        handoff = world.request(world.as_alice, world.bob_role)
        wait_for(lambda handoff=handoff: timer(world.running, handoff["id"]) is not None)
        payload = (timer(world.running, handoff["id"]) or {})["payload"]
        with ThreadPoolExecutor(2) as pool:
            fired = pool.submit(refire, world.running, f"{NAME}/Task/{handoff['id']}/answer", payload)
            answered = pool.submit(world.answer, world.as_bob, handoff, "accepted")
            fired.result()
            status = answered.result().status_code
        wait_for(lambda handoff=handoff: world.get(f"Task/{handoff['id']}")["status"] in ("completed", "failed"))
        outcome = world.get(f"Task/{handoff['id']}")["status"]
        focus = world.get(world.focus)
        escalations = world.effects("Task", handoff["id"])
        if outcome == "completed":
            assert status == 200 and focus["owner"] == {"reference": world.bob_role} and escalations == []
            assert len(world.effects("Communication", handoff["id"])) == 1
        else:
            assert status == 409 and "owner" not in focus and len(escalations) == 1
        # The next round starts from a Task Alice owns again.
        world.put({**focus, "owner": {"reference": world.alice}, "meta": {}})


def test_two_handoffs_of_one_task_accepted_one_transfers(world: World) -> None:
    first = world.request(world.as_alice, world.bob_role)
    second = world.request(world.as_alice, world.carol)
    assert world.answer(world.as_bob, first, "accepted").status_code == 200
    wait_for(lambda: world.get(f"Task/{first['id']}")["status"] == "completed")
    assert world.answer(world.user(world.carol), second, "accepted").status_code == 200
    wait_for(lambda: world.get(f"Task/{second['id']}")["status"] == "failed")
    assert world.get(world.focus)["owner"] == {"reference": world.bob_role}
    told = world.effects("Communication", second["id"])
    assert len(told) == 1 and told[0]["recipient"] == [{"reference": world.alice}]



def test_both_sides_and_the_care_team_are_notified(world: World) -> None:
    """Each party's own Subscription (delivered with that party's access) sees the hand-off."""
    hooks = {name: Receiver().start() for name in ("team", "bob", "alice")}
    try:
        subscriptions = {"team": (world.user(world.carol), f"Task?patient={world.patient}"),
                         "bob": (world.as_bob, f"Task?owner={world.bob_role}"),
                         "alice": (world.as_alice, f"Communication?recipient={world.alice}")}
        for name, (api, criteria) in subscriptions.items():
            response = api.post("/Subscription", json={
                "resourceType": "Subscription", "status": "requested", "reason": "hand-offs", "criteria": criteria,
                "channel": {"type": "rest-hook", "endpoint": hooks[name].url, "payload": "application/fhir+json"}})
            assert response.status_code == 201, response.text
            sub_id = response.json()["id"]
            wait_for(lambda api=api, sub_id=sub_id: api.get(f"/Subscription/{sub_id}").json()["status"] == "active")
        handoff = world.request(world.as_alice, world.bob_role)
        assert world.answer(world.as_bob, handoff, "accepted").status_code == 200
        wait_for(lambda: world.get(f"Task/{handoff['id']}")["status"] == "completed")
        told = world.effects("Communication", handoff["id"])[0]

        def seen(name: str) -> set[str]:
            """What a party's R4 rest-hook was sent: each notification's resource."""
            bodies = [r.json for r in list(hooks[name].requests) if r.body]
            return {f"{b['resourceType']}/{b['id']}" for b in bodies if "id" in b}

        wait_for(lambda: {f"Task/{handoff['id']}", world.focus} <= seen("team"))
        wait_for(lambda: world.focus in seen("bob"))  # the focus Task is now Bob's
        wait_for(lambda: f"Communication/{told['id']}" in seen("alice"))
    finally:
        for hook in hooks.values():
            hook.stop()
