"""The closed-loop referral, end to end over HTTP with SMART on: two organizations (north
refers, south performs) and their practitioners, each with a token naming its fhirUser.

The rules on writes (interceptors.referral_rules), the workflow's effects (workflows.referral:
Communications, the ServiceRequest following, SLA reminders and escalation on durable timers)
counted by their identifiers, and the Gravity topics delivering id-only notifications to a
rest-hook and a websocket subscriber."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient
from websockets.sync.client import connect

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings, SubscriptionSettings, WorkflowSettings
from fhir_server.context import RequestContext
from fhir_server.services import auth_settings, build_services
from subscriptions.channels import Notification
from tests.conftest import RunningServer, make_settings
from tests.subscriptions.conftest import BACKPORT, wait_until
from tests.subscriptions.receiver import Receiver
from workflows import EFFECT_SYSTEM

Doc = dict[str, Any]
TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
SR_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Servicerequest"
SLA_TIMERS = ("received", "accepted", "escalate")
BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
FAST = SubscriptionSettings(allowed_hosts=("127.0.0.1",), retry_initial=0.05, retry_max=0.25,
                            retry_window=3600.0, delivery_timeout=2.0, lease_ttl=2.0,
                            scan_interval=0.2, poll_interval=0.2)
# North's own settings: SLA clocks of seconds, escalation to its coordinator. "Organization/
# slow" keeps the shipped defaults (days): its referrals never see a timer fire in a test.
DEFINITIONS = """\
defaults:
  referral:
    receivedWithin: P1D
    acceptedWithin: P3D
    escalateAfter: P5D
    notifyRequester: true
organizations:
  Organization/north:
    referral:
      receivedWithin: PT2S
      acceptedWithin: PT3S
      escalateAfter: PT4S
      escalateTo: [PractitionerRole/north-coordinator]
  Organization/quiet:
    referral:
      notifyRequester: false
  Organization/roomy:
    referral:
      receivedWithin: PT2M
      acceptedWithin: PT3M
      escalateAfter: PT4M
      escalateTo: [PractitionerRole/north-coordinator]
"""


class World:
    """The server, its admin client, and one client per practitioner."""

    def __init__(self, running: RunningServer, tokens: dict[str, str]) -> None:
        self.running = running
        self.settings = running.settings
        self.clients = {name: httpx.Client(base_url=self.settings.base_url, timeout=30,
                                           headers={"Authorization": f"Bearer {token}"})
                        for name, token in tokens.items()}

    def __getitem__(self, name: str) -> httpx.Client:
        return self.clients[name]


def _mint(settings: Settings, scope: str, fhir_user: str | None) -> str:
    async def work() -> str:
        client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
        try:
            return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                        fhir_user=fhir_user)
        finally:
            await client.close()

    return asyncio.run(work())


DIRECTORY: list[Doc] = [
    {"resourceType": "Organization", "id": "north", "name": "North Family Practice"},
    {"resourceType": "Organization", "id": "slow", "name": "Slow Clinic"},
    {"resourceType": "Organization", "id": "quiet", "name": "Quiet Clinic"},
    {"resourceType": "Organization", "id": "roomy", "name": "Roomy Clinic"},
    {"resourceType": "PractitionerRole", "id": "roomy-gp", "active": True,
     "practitioner": {"reference": "Practitioner/dr-north"}, "organization": {"reference": "Organization/roomy"}},
    {"resourceType": "PractitionerRole", "id": "quiet-gp", "active": True,
     "practitioner": {"reference": "Practitioner/dr-slow"}, "organization": {"reference": "Organization/quiet"}},
    {"resourceType": "Organization", "id": "south", "name": "South Cardiology"},
    *[{"resourceType": "Practitioner", "id": pid, "name": [{"family": pid}]}
      for pid in ("dr-north", "dr-slow", "dr-south", "nurse-south", "coordinator", "outsider")],
    {"resourceType": "PractitionerRole", "id": "north-gp", "active": True,
     "practitioner": {"reference": "Practitioner/dr-north"}, "organization": {"reference": "Organization/north"}},
    {"resourceType": "PractitionerRole", "id": "slow-gp", "active": True,
     "practitioner": {"reference": "Practitioner/dr-slow"}, "organization": {"reference": "Organization/slow"}},
    {"resourceType": "PractitionerRole", "id": "north-coordinator", "active": True,
     "practitioner": {"reference": "Practitioner/coordinator"}, "organization": {"reference": "Organization/north"}},
    {"resourceType": "PractitionerRole", "id": "south-cardiologist", "active": True,
     "practitioner": {"reference": "Practitioner/dr-south"}, "organization": {"reference": "Organization/south"}},
    {"resourceType": "PractitionerRole", "id": "south-nurse", "active": True,
     "practitioner": {"reference": "Practitioner/nurse-south"}, "organization": {"reference": "Organization/south"}},
]


@pytest.fixture(scope="module")
def world(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    definitions = tmp_path_factory.mktemp("referral") / "workflows.yaml"
    definitions.write_text(DEFINITIONS)
    settings = make_settings(
        mongodb_uri, database=f"fhir_referral_{uuid.uuid4().hex[:8]}", auth_enabled=True, subscriptions=FAST,
        workflows=WorkflowSettings(timer_poll=0.05, definitions=Path(definitions)),
        extra={"provenance": "on", "audit": "on"})
    with RunningServer(settings) as running:
        users = {"admin": ("system/*.cruds", None), "auditor": ("system/Provenance.rs", None),
                 "north": ("user/*.cruds", "Practitioner/dr-north"),
                 "slow": ("user/*.cruds", "Practitioner/dr-slow"),
                 "south": ("user/*.cruds", "Practitioner/dr-south"),
                 "nurse": ("user/*.cruds", "PractitionerRole/south-nurse"),
                 "coordinator": ("user/*.cruds", "Practitioner/coordinator"),
                 "outsider": ("user/*.cruds", "Practitioner/outsider"),
                 "nobody": ("user/*.cruds", None)}
        tokens = {name: _mint(settings, scope, user) for name, (scope, user) in users.items()}
        made = World(running, tokens)
        for resource in DIRECTORY:
            response = made["admin"].put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
            assert response.status_code == 201, response.text
        yield made
        for client in made.clients.values():
            client.close()


# ---------------------------------------------------------------- building referrals

def unique(prefix: str = "p") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def refer(world: World, *, by: str = "north", requester: str = "PractitionerRole/north-gp",
          owner: str = "Organization/south", status: str = "requested") -> tuple[Doc, Doc]:
    """The requester side makes a referral in one transaction: ServiceRequest + Task."""
    patient = unique()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5e0a9a4c-0000-4000-8000-000000000001",
         "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                                "display": "Patient referral"}]}],
                      "code": {"text": "Cardiology consult"},
                      "subject": {"reference": f"Patient/{patient}"},
                      "requester": {"reference": requester}, "performer": [{"reference": owner}]},
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"fullUrl": "urn:uuid:5e0a9a4c-0000-4000-8000-000000000002",
         "resource": task_for("urn:uuid:5e0a9a4c-0000-4000-8000-000000000001", patient, requester, owner, status),
         "request": {"method": "POST", "url": "Task"}},
    ]}
    response = world[by].post("", json=bundle)
    assert response.status_code == 200, response.text
    locations = [e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]]
    sr = world["admin"].get(f"/{locations[0]}").json()
    task = world["admin"].get(f"/{locations[1]}").json()
    return sr, task


def task_for(focus: str, patient: str, requester: str, owner: str, status: str = "requested") -> Doc:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
            "focus": {"reference": focus}, "for": {"reference": f"Patient/{patient}"},
            "authoredOn": "2026-12-01T09:00:00Z",
            "requester": {"reference": requester}, "owner": {"reference": owner}}


def move(world: World, by: str, task: Doc, status: str, **changes: Any) -> httpx.Response:
    current = world["admin"].get(f"/Task/{task['id']}").json()
    current.pop("meta", None)
    return world[by].put(f"/Task/{task['id']}", json={**current, "status": status, **changes})


def moved(world: World, by: str, task: Doc, status: str, **changes: Any) -> Doc:
    response = move(world, by, task, status, **changes)
    assert response.status_code == 200, response.text
    result: Doc = response.json()
    return result


def consult_note(world: World, task: Doc) -> list[Doc]:
    note = {"resourceType": "DocumentReference", "status": "current",
            "subject": task["for"], "content": [{"attachment": {"contentType": "text/plain", "data": "T0sK"}}]}
    response = world["south"].post("/DocumentReference", json=note)
    assert response.status_code == 201, response.text
    return [{"type": {"text": "consult note"}, "valueReference": {"reference": f"DocumentReference/{response.json()['id']}"}}]


def effects(world: World, resource_type: str, task: Doc, what: str = "") -> list[Doc]:
    """The referral workflow's effects about `task`, found by their identifiers."""
    bundle = world["admin"].get(f"/{resource_type}", params={
        "identifier": f"{EFFECT_SYSTEM}|", "_count": "200"}).json()
    found = []
    for entry in bundle.get("entry", []):
        values = [i["value"] for i in entry["resource"].get("identifier", []) if i.get("system") == EFFECT_SYSTEM]
        if any(v.startswith("referral/") and f"Task/{task['id']}/" in v and v.endswith(what) for v in values):
            found.append(entry["resource"])
    return found


def effect_values(resources: list[Doc]) -> list[str]:
    return sorted(i["value"] for r in resources for i in r["identifier"] if i["system"] == EFFECT_SYSTEM)


def outcome(response: httpx.Response) -> str:
    diagnostics: str = response.json()["issue"][0]["diagnostics"]
    return diagnostics


def business(task: Doc) -> str | None:
    return next((c["code"] for c in (task.get("businessStatus") or {}).get("coding", []) if c["system"] == BSER),
                None)


def timers(world: World, task: Doc, mongo: MongoClient[Doc]) -> dict[str, str]:
    docs = mongo[world.settings.database]["timers"].find({"_id": {"$regex": f"^referral/Task/{task['id']}/"}})
    return {d["_id"].rsplit("/", 1)[-1]: d["status"] for d in docs}


def subscription(criteria: str, filters: tuple[str, ...], channel: str, endpoint: str = "") -> Doc:
    channel_doc: Doc = {"type": channel, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]}}
    if endpoint:
        channel_doc["endpoint"] = endpoint
    return {"resourceType": "Subscription", "meta": {"profile": [BACKPORT + "backport-subscription"]},
            "status": "requested", "reason": "referrals", "criteria": criteria, "channel": channel_doc,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f}
                                        for f in filters]}}


def active(client: httpx.Client, sub: Doc) -> str:
    response = client.post("/Subscription", json=sub)
    assert response.status_code == 201, response.text
    sub_id: str = response.json()["id"]
    wait_until(lambda: client.get(f"/Subscription/{sub_id}").json()["status"] == "active",
               what=f"Subscription/{sub_id} active")
    return sub_id


def notified(bundle: Doc) -> list[tuple[str, bool]]:
    """(focus reference, whether the entry carries the resource) of a notification Bundle."""
    return [("/".join(e["fullUrl"].split("/")[-2:]), "resource" in e) for e in bundle["entry"][1:]]


# ---------------------------------------------------------------- the round trip

def test_a_referral_round_trip_to_completion(world: World, mongo: MongoClient[Doc]) -> None:
    receiver = Receiver().start()
    try:
        # The requester side listens for its referrals on rest-hook, the performer side for the
        # Tasks it owns on a websocket, both id-only; the requester also follows its ServiceRequests.
        rest = active(world["slow"], subscription(TASK_TOPIC, ("Task?requester=PractitionerRole/slow-gp",),
                                                  "rest-hook", receiver.url))
        ws_id = active(world["south"], subscription(TASK_TOPIC, ("Task?owner=Organization/south",), "websocket"))
        binding = world["south"].get(f"/Subscription/{ws_id}/$get-ws-binding-token").json()
        params = {p["name"]: p.get("valueString") or p.get("valueUrl") for p in binding["parameter"]}
        with connect(str(params["websocket-url"])) as ws:
            ws.send(f"bind-with-token {params['token']}")
            handshake = json.loads(ws.recv(timeout=10))
            assert handshake["entry"][0]["resource"]["resourceType"] == "Parameters"

            sr, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
            active(world["slow"], subscription(SR_TOPIC, (f"ServiceRequest?_id={sr['id']}",), "rest-hook",
                                               receiver.url))
            assert business(task) == "2.0"  # BSeR: Service Request Created
            wait_until(lambda: timers(world, task, mongo) == dict.fromkeys(SLA_TIMERS, "pending"),
                       what="three SLA timers pending")
            received = moved(world, "south", task, "received")
            wait_until(lambda: timers(world, task, mongo)["received"] == "cancelled", what="received timer cancelled")
            accepted = moved(world, "nurse", received, "accepted")  # a colleague in the same organization
            assert business(accepted) == "3.0"
            wait_until(lambda: timers(world, task, mongo) == dict.fromkeys(SLA_TIMERS, "cancelled"),
                       what="SLA timers cancelled")
            moved(world, "south", accepted, "in-progress")
            done = moved(world, "south", task, "completed", output=consult_note(world, task))
            assert business(done) == "7.0" and done["meta"]["versionId"] == "5"

            # The performer's websocket: every version of its Task, id only.
            seen: list[tuple[str, bool]] = []
            while len(seen) < 5:
                message = json.loads(ws.recv(timeout=15))
                status = {p["name"]: p for p in message["entry"][0]["resource"]["parameter"]}
                if status["type"]["valueCode"] == "event-notification":
                    seen += notified(message)
            assert seen == [(f"Task/{task['id']}", False)] * 5

        # The requester's rest-hook: the same five, and its ServiceRequest's completion.
        receiver.wait_for(lambda got: sum(len(r.json["entry"]) - 1 for r in got
                                          if r.body and r.status_type == "event-notification") >= 6)
        by_focus: dict[str, list[bool]] = {}
        for request in receiver.events():
            for focus, has_resource in notified(request.json):
                by_focus.setdefault(focus, []).append(has_resource)
        assert by_focus == {f"Task/{task['id']}": [False] * 5, f"ServiceRequest/{sr['id']}": [False]}

        # The ServiceRequest followed; the requester heard of the acceptance and the completion.
        wait_until(lambda: world["slow"].get(f"/ServiceRequest/{sr['id']}").json()["status"] == "completed",
                   what="ServiceRequest completed")
        told = wait_until(lambda: len(found := effects(world, "Communication", task)) == 2 and found,
                          what="two Communications to the requester")
        assert effect_values(told) == [f"referral/Task/{task['id']}/_history/3/notify-requester-accepted",
                                       f"referral/Task/{task['id']}/_history/5/notify-requester-completed"]
        assert {c["recipient"][0]["reference"] for c in told} == {"PractitionerRole/slow-gp"}
        assert all(c["basedOn"] == [{"reference": f"Task/{task['id']}"}] for c in told)
        # The engine acted: its Device is the Provenance agent of the ServiceRequest's change.
        provenance = world["auditor"].get("/Provenance", params={"target": f"ServiceRequest/{sr['id']}"}).json()
        agents = [e["resource"]["agent"][0]["who"].get("reference") for e in provenance["entry"]]
        assert "Device/coordination-engine" in agents
        assert rest
    finally:
        receiver.stop()


def test_a_rejected_referral(world: World, mongo: MongoClient[Doc]) -> None:
    sr, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    rejected = moved(world, "south", task, "rejected", statusReason={"text": "no capacity this month"})
    assert business(rejected) == "4.0"  # BSeR: Service Request Declined
    wait_until(lambda: world["slow"].get(f"/ServiceRequest/{sr['id']}").json()["status"] == "revoked",
               what="ServiceRequest revoked")
    [told] = wait_until(lambda: effects(world, "Communication", task), what="the requester told")
    assert told["payload"][0]["contentString"].endswith("Reason: no capacity this month")
    assert told["recipient"] == [{"reference": "PractitionerRole/slow-gp"}]
    wait_until(lambda: timers(world, task, mongo) == dict.fromkeys(SLA_TIMERS, "cancelled"),
               what="SLA timers cancelled")
    # Rejected is an end: the performer cannot take it back, nor the requester re-request it.
    assert move(world, "south", task, "accepted").status_code == 422
    assert move(world, "slow", task, "requested").status_code == 422


def test_an_organization_may_do_without_the_requesters_communications(world: World) -> None:
    """Quiet Clinic's settings say `notifyRequester: false`: its Subscriptions tell it, no
    Communication does (the ServiceRequest following, in the same handling, shows the
    workflow has seen the completion)."""
    sr, task = refer(world, by="slow", requester="PractitionerRole/quiet-gp")
    moved(world, "south", task, "accepted")
    moved(world, "south", task, "completed", output=consult_note(world, task))
    wait_until(lambda: world["slow"].get(f"/ServiceRequest/{sr['id']}").json()["status"] == "completed",
               what="ServiceRequest completed")
    assert effects(world, "Communication", task) == []


# ---------------------------------------------------------------- the rules

def test_a_transition_from_the_wrong_side_is_refused_naming_the_rule(world: World) -> None:
    _, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    wrong = move(world, "slow", task, "accepted")  # the requester cannot accept its own referral
    assert wrong.status_code == 403
    assert outcome(wrong).startswith("referral-side: only the performer side (Task.owner) may set status 'accepted'")
    assert wrong.json()["issue"][0]["expression"] == ["Task.status"]
    moved(world, "south", task, "accepted")
    wrong = move(world, "south", task, "entered-in-error")  # the requester's to say
    assert wrong.status_code == 403 and outcome(wrong).startswith("referral-side: only the requester side")
    # Someone on neither side, and a token that does not say who it is, change nothing.
    assert move(world, "outsider", task, "cancelled").status_code == 403
    assert outcome(move(world, "outsider", task, "cancelled")).startswith("referral-party: Practitioner/outsider")
    nobody = move(world, "nobody", task, "in-progress")
    assert nobody.status_code == 403 and outcome(nobody).startswith("referral-party: the token names no fhirUser")
    # The performer does not make referrals to itself, and does not delete them.
    created = world["south"].post("/Task", json=task_for(task["focus"]["reference"], unique(),
                                                         "PractitionerRole/slow-gp", "Organization/south"))
    assert created.status_code == 403 and outcome(created).startswith("referral-side: only the requester side")
    assert world["south"].delete(f"/Task/{task['id']}").status_code == 403
    # Either side may cancel.
    assert moved(world, "slow", task, "cancelled")["status"] == "cancelled"
    versions = len(world["admin"].get(f"/Task/{task['id']}/_history").json()["entry"])
    assert versions == 3  # requested, accepted, cancelled: the refusals wrote nothing


def test_a_state_machine_violation_is_refused_naming_the_rule(world: World) -> None:
    _, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    early = move(world, "south", task, "completed", output=consult_note(world, task))
    assert early.status_code == 422
    assert outcome(early).startswith("referral-transition: the Task state machine does not allow requested → completed")
    moved(world, "south", task, "accepted")
    moved(world, "south", task, "completed", output=consult_note(world, task))
    back = move(world, "south", task, "in-progress")
    assert back.status_code == 422
    assert back.json()["issue"][0]["code"] == "business-rule"
    assert outcome(back) == ("referral-transition: the Task state machine does not allow completed → in-progress "
                             "(from completed: entered-in-error)")
    # A referral starts as draft or requested.
    started = world["slow"].post("/Task", json=task_for(task["focus"]["reference"], unique(),
                                                        "PractitionerRole/slow-gp", "Organization/south", "accepted"))
    assert started.status_code == 422 and outcome(started).startswith("referral-transition: a referral starts")
    # Its identity does not change under it.
    fixed = move(world, "slow", task, "completed", owner={"reference": "Organization/south"},
                 requester={"reference": "PractitionerRole/north-gp"})
    assert fixed.status_code == 422 and outcome(fixed).startswith("referral-fixed: Task.requester")
    # The same requester spelled absolute on this server, with a display, is no change of it.
    spelled = move(world, "south", task, "completed", requester={
        "reference": f"{world.settings.base_url}/PractitionerRole/slow-gp", "display": "Dr Slow"})
    assert spelled.status_code == 200, spelled.text


def test_completion_without_output_is_refused(world: World) -> None:
    _, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    moved(world, "south", task, "accepted")
    bare = move(world, "south", task, "completed")
    assert bare.status_code == 422
    assert outcome(bare).startswith("referral-output: a referral is completed with its result in Task.output")
    assert bare.json()["issue"][0]["expression"] == ["Task.output"]
    assert world["admin"].get(f"/Task/{task['id']}").json()["status"] == "accepted"
    bad = move(world, "south", task, "in-progress", businessStatus={"coding": [{"system": BSER, "code": "9.9"}]})
    assert bad.status_code == 422 and outcome(bad).startswith("referral-business-status: '9.9'")
    # The performer's own, finer BSeR status is kept (an event scheduled while in progress).
    scheduled = moved(world, "south", task, "in-progress",
                      businessStatus={"coding": [{"system": BSER, "code": "5.1.1"}]})
    assert business(scheduled) == "5.1.1"


def test_sixteen_concurrent_answers_make_one_transition(world: World) -> None:
    _, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    current = world["admin"].get(f"/Task/{task['id']}").json()
    current.pop("meta")

    def answer(status: str) -> int:
        body = {**current, "status": status}
        if status == "rejected":
            body["statusReason"] = {"text": "full"}
        return world["south"].put(f"/Task/{task['id']}", json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(answer, ["accepted", "rejected"] * 8))
    accepted, rejected = codes[0::2], codes[1::2]
    final = world["admin"].get(f"/Task/{task['id']}").json()
    winners, losers = (accepted, rejected) if final["status"] == "accepted" else (rejected, accepted)
    assert winners == [200] * 8 and losers == [422] * 8
    assert len(world["admin"].get(f"/Task/{task['id']}/_history").json()["entry"]) == 2
    told = wait_until(lambda: effects(world, "Communication", task), what="the requester told")
    assert len(told) == 1


# ---------------------------------------------------------------- SLA timers

def test_sla_reminder_and_escalation(world: World, mongo: MongoClient[Doc]) -> None:
    """North's referrals must be received in 2 s and accepted in 3 s, or its coordinator gets a
    Task at 4 s; a referral answered in time gets none of it."""
    _, late = refer(world)
    # The prompt one is Roomy's (minutes, not seconds): on a loaded machine, answering within
    # North's 2 s is not "in time" for sure, and a reminder for it would then be right.
    _, prompt = refer(world, requester="PractitionerRole/roomy-gp")
    wait_until(lambda: timers(world, prompt, mongo) == dict.fromkeys(SLA_TIMERS, "pending"),
               what="the prompt referral's three SLA timers pending")
    moved(world, "south", prompt, "accepted")
    # Its clocks end with the acceptance, long before any is due.
    wait_until(lambda: timers(world, prompt, mongo) == dict.fromkeys(SLA_TIMERS, "cancelled"),
               timeout=20, what="the prompt referral's timers cancelled")

    escalations = wait_until(lambda: effects(world, "Task", late), timeout=20, what="the escalation Task")
    [escalation] = escalations
    assert escalation["owner"] == {"reference": "PractitionerRole/north-coordinator"}
    assert escalation["focus"] == {"reference": f"Task/{late['id']}"} and escalation["status"] == "requested"
    reminders = effects(world, "Communication", late)
    assert effect_values(reminders) == [
        f"referral/timer/referral/Task/{late['id']}/accepted/reminder-accepted",
        f"referral/timer/referral/Task/{late['id']}/received/reminder-received"]
    assert {r["recipient"][0]["reference"] for r in reminders} == {"Organization/south"}
    assert {r["category"][0]["coding"][0]["code"] for r in reminders} == {"reminder"}
    assert effect_values(escalations) == [f"referral/timer/referral/Task/{late['id']}/escalate/escalation-0"]
    assert timers(world, late, mongo) == {"received": "done", "accepted": "done", "escalate": "done"}
    # The coordinator sees the escalation Task as its own work (its token, its worklist).
    mine = world["coordinator"].get("/Task", params={"owner": "PractitionerRole/north-coordinator",
                                                     "focus": f"Task/{late['id']}"}).json()
    assert [e["resource"]["id"] for e in mine["entry"]] == [escalation["id"]]
    # The prompt referral: the requester told of the acceptance, and no reminder, no escalation.
    assert effect_values(effects(world, "Communication", prompt)) == [
        f"referral/Task/{prompt['id']}/_history/2/notify-requester-accepted"]
    assert effects(world, "Task", prompt) == []


# ---------------------------------------------------------------- exactly once

def test_a_redelivered_transition_doubles_no_effect(world: World) -> None:
    sr, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    moved(world, "south", task, "accepted")
    wait_until(lambda: effects(world, "Communication", task), what="the requester told")
    settings = world.settings

    async def again() -> None:
        services = await build_services(settings, workflows=[])
        try:
            assert services.workflows is not None
            workflow = services.workflows.workflows["referral"]
            stored = await services.repository.vread(RequestContext.system(settings.base_url), "Task", task["id"], 2)
            note = Notification("in-process-referral", None, 1, stored.last_updated, "update", "Task",
                                f"Task/{task['id']}", stored.resource)
            await asyncio.gather(*(services.workflows.handle(workflow, note) for _ in range(4)))
        finally:
            await services.close()

    asyncio.run(again())
    assert effect_values(effects(world, "Communication", task)) == [
        f"referral/Task/{task['id']}/_history/2/notify-requester-accepted"]
    assert len(world["admin"].get(f"/ServiceRequest/{sr['id']}/_history").json()["entry"]) == 1  # accepted: no end yet


# ---------------------------------------------------------------- the Gravity topics' filters

def test_each_filter_of_the_gravity_topics(world: World) -> None:
    """Each filter Gravity names, on a subscriber of the requester side: one that matches the
    referral's notifications, one that does not."""
    receiver = Receiver().start()
    try:
        sr_id = str(uuid.uuid4())
        cases = {  # path -> (topic, filter, notifications expected: create requested, update accepted)
            "owner": (TASK_TOPIC, "Task?owner=Organization/south", 2),
            "owner-not": (TASK_TOPIC, "Task?owner=Organization/north", 0),
            "requester": (TASK_TOPIC, "Task?requester=PractitionerRole/slow-gp", 2),
            "requester-not": (TASK_TOPIC, "Task?requester=PractitionerRole/north-gp", 0),
            "status": (TASK_TOPIC, "Task?status=accepted", 1),
            "code": (TASK_TOPIC, "Task?code=http://hl7.org/fhir/CodeSystem/task-code|fulfill", 2),
            "code-not": (TASK_TOPIC, "Task?code=http://hl7.org/fhir/CodeSystem/task-code|approve", 0),
            "since": (TASK_TOPIC, "Task?_lastUpdated=gt2026-01-01", 2),
            "since-not": (TASK_TOPIC, "Task?_lastUpdated=lt2026-01-01", 0),
            "id": (SR_TOPIC, f"ServiceRequest?_id={sr_id}", 2),
            "id-not": (SR_TOPIC, f"ServiceRequest?_id={uuid.uuid4()}", 0),
        }
        for path, (topic, criteria, _) in cases.items():
            # The requester side's own Subscriptions, delivered with its own access.
            active(world["slow"], subscription(topic, (criteria,), "rest-hook", f"{receiver.url}/{path}"))
        patient = unique()
        sr = {"resourceType": "ServiceRequest", "id": sr_id, "status": "active", "intent": "order",
              "subject": {"reference": f"Patient/{patient}"}, "requester": {"reference": "PractitionerRole/slow-gp"}}
        assert world["slow"].put(f"/ServiceRequest/{sr_id}", json=sr).status_code == 201
        made = world["slow"].post("/Task", json=task_for(f"ServiceRequest/{sr_id}", patient,
                                                         "PractitionerRole/slow-gp", "Organization/south"))
        assert made.status_code == 201, made.text
        moved(world, "south", made.json(), "accepted")
        moved(world, "slow", made.json(), "cancelled")  # the ServiceRequest follows: revoked

        def count(path: str) -> int:
            return sum(len(r.json["entry"]) - 1 for r in receiver.events() if r.path == f"/hook/{path}")

        expected = {path: n for path, (_, _, n) in cases.items()}
        expected |= {"owner": 3, "requester": 3, "code": 3, "since": 3}  # the cancellation too
        wait_until(lambda: all(count(p) >= n for p, n in expected.items() if n),
                   what="the matching subscribers notified")
        assert {p: count(p) for p in cases} == expected
        task_entries = [e for r in receiver.events() if r.path == "/hook/requester" for e in r.json["entry"][1:]]
        assert all("resource" not in e for e in task_entries)  # id-only
        assert {e["fullUrl"].split("/fhir/")[1] for e in task_entries} == {f"Task/{made.json()['id']}"}
    finally:
        receiver.stop()


# ---------------------------------------------------------------- every write path, odd inputs

def test_the_rules_hold_on_every_write_path(world: World) -> None:
    sr, task = refer(world, by="slow", requester="PractitionerRole/slow-gp")
    # JSON Patch: the requester side cannot accept either.
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    patched = world["slow"].patch(f"/Task/{task['id']}", content=json.dumps(patch),
                                  headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 403 and outcome(patched).startswith("referral-side:")
    # A transaction with one refused entry writes none of them.
    current = world["admin"].get(f"/Task/{task['id']}").json()
    note = {"resourceType": "Communication", "status": "completed", "subject": task["for"]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": note, "request": {"method": "POST", "url": "Communication"}},
        {"resource": {**current, "status": "accepted"}, "request": {"method": "PUT", "url": f"Task/{task['id']}"}}]}
    refused = world["slow"].post("", json=bundle)
    assert refused.status_code == 403 and "referral-side" in outcome(refused)
    assert world["admin"].get("/Communication", params={"subject": task["for"]["reference"]}).json()["total"] == 0
    # In a batch, the refused entry alone fails.
    batch = {**bundle, "type": "batch"}
    answered = world["slow"].post("", json=batch).json()
    assert [e["response"]["status"][:3] for e in answered["entry"]] == ["201", "403"]
    # A referral whose requester or owner is missing or elsewhere: no one here is its party.
    for requester, owner in ((None, "Organization/south"), ("https://elsewhere.example/fhir/Organization/x",
                                                            "Organization/south")):
        body = task_for(f"ServiceRequest/{sr['id']}", unique(), "PractitionerRole/slow-gp", owner)
        if requester is None:
            del body["requester"]
        else:
            body["requester"] = {"reference": requester}
        made = world["slow"].post("/Task", json=body)
        assert made.status_code == 403 and outcome(made).startswith("referral-party:"), made.text
    assert world["admin"].get(f"/Task/{task['id']}").json()["meta"]["versionId"] == "1"


def test_in_dev_mode_the_state_machine_still_holds(client: httpx.Client) -> None:
    """Auth off: no one is identified, so no side is checked; the Task's own rules are."""
    sr = client.post("/ServiceRequest", json={"resourceType": "ServiceRequest", "status": "active",
                                              "intent": "order", "subject": {"reference": "Patient/dev"}})
    assert sr.status_code == 201
    made = client.post("/Task", json=task_for(f"ServiceRequest/{sr.json()['id']}", "dev", "PractitionerRole/a",
                                              "Organization/b"))
    assert made.status_code == 201 and business(made.json()) == "2.0"
    task = made.json()
    assert client.put(f"/Task/{task['id']}", json={**task, "status": "accepted"}).status_code == 200
    bare = client.put(f"/Task/{task['id']}", json={**task, "status": "completed"})
    assert bare.status_code == 422 and outcome(bare).startswith("referral-output:")
    done = client.put(f"/Task/{task['id']}", json={**task, "status": "completed", "output": [
        {"type": {"text": "note"}, "valueString": "seen, no follow-up"}]})
    assert done.status_code == 200 and business(done.json()) == "7.0"
    back = client.put(f"/Task/{task['id']}", json={**task, "status": "in-progress"})
    assert back.status_code == 422 and outcome(back).startswith("referral-transition:")
