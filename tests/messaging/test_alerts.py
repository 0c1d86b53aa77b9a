"""Derived alerts: after the grace period, only for participants no system rendered the message
for, exactly once per (message, participant) over all systems and server processes, through
the `communication-unrendered` topic, and never to someone the patient's Consent denies."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import WorkflowSettings
from fhir_server.messaging import store
from fhir_server.services import auth_settings
from tests.conftest import RunningServer
from tests.consent.conftest import actor, classes, consent
from tests.messaging.conftest import GRACE, TAG, World, cursor_parameters, message, ref, unrendered_subscription
from tests.subscriptions.conftest import fast_settings, wait_until
from tests.subscriptions.receiver import Receiver
from workflows.timers import COLLECTION as TIMERS
from workflows.timers import DONE


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    """One rest-hook endpoint per consuming system."""
    running = {name: Receiver().start() for name in ("ehr", "portal", "dashboard")}
    yield running
    for r in running.values():
        r.stop()


def subscribe(client: httpx.Client, endpoint: str, participant: str) -> str:
    reply = client.post("/Subscription", json=unrendered_subscription(endpoint, participant))
    assert reply.status_code == 201, reply.text
    sub_id: str = reply.json()["id"]
    wait_until(lambda: client.get(f"/Subscription/{sub_id}").json()["status"] == "active",
               what=f"Subscription/{sub_id} active")
    return sub_id


def alerts(receiver: Receiver) -> list[tuple[str, str]]:
    """(participant, message) of every alert a system was notified of."""
    out = []
    for event in receiver.events():
        for entry in event.json["entry"][1:]:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "Basic":
                out.append((resource["author"]["reference"], resource["subject"]["reference"]))
    return out


def stored_alerts(client: httpx.Client, message_id: str) -> list[str]:
    found = client.get("/Basic", params={"code": f"{TAG}|unrendered", "subject": f"Communication/{message_id}",
                                         "_count": "100"}).json()
    return sorted(e["resource"]["author"]["reference"] for e in found.get("entry", []))


def wait_decided(mongo: MongoClient[dict[str, Any]], server: RunningServer, *messages: str) -> None:
    """Until the alert decision of each message is taken (its durable timer done): no alert
    of these messages can follow after that, so counting them then is final."""
    timers = mongo[server.settings.database][TIMERS]
    keys = [f"messaging-alerts/unrendered/{m}" for m in messages]
    wait_until(lambda: timers.count_documents({"_id": {"$in": keys}, "status": DONE}) == len(keys),
               timeout=GRACE + 30, what=f"the alert decisions of {len(keys)} message(s)")


def opens_inbox(world: World, who: str, via: str) -> None:
    """`who` opens their inbox through `via`: the server verifies, and records, their grant."""
    reply = world.person(who, via).get("/Communication/$render-state", params={"participant": world.ref(who)})
    assert reply.status_code == 200, reply.text


def two_person_thread(world: World) -> str:
    """Anna and her GP only."""
    header = {**world.thread_header(), "recipient": [ref(world.ref("gray"))]}
    reply = world.person("anna", "portal").post("/Communication", json=header)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def test_a_message_the_gps_ehr_renders_in_the_grace_period_alerts_no_one(
        world: World, receivers: dict[str, Receiver], mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    ehr, dashboard = world.system("ehr"), world.system("dashboard")
    subscribe(ehr, receivers["ehr"].url, world.ref("gray"))
    subscribe(dashboard, receivers["dashboard"].url, world.ref("gray"))
    opens_inbox(world, "gray", "ehr")
    thread_id = two_person_thread(world)
    gp = world.person("gray", "ehr")
    rendered = world.person("anna", "portal").post(
        "/Communication", json=message(thread_id, "My readings: 150/95", world.ref("anna"))).json()["id"]
    reply = gp.post(f"/Communication/{thread_id}/$render-cursor", json=cursor_parameters(world.ref("gray"), rendered))
    assert reply.status_code == 200, reply.text
    # The next message nobody renders: its alert shows the first one's decision was taken.
    unrendered = world.person("anna", "portal").post(
        "/Communication", json=message(thread_id, "Also dizzy", world.ref("anna"))).json()["id"]
    receivers["ehr"].wait_for(lambda _: len(alerts(receivers["ehr"])) >= 1, timeout=GRACE + 20)
    wait_decided(mongo, messaging_server, rendered, unrendered)
    assert alerts(receivers["ehr"]) == [(world.ref("gray"), f"Communication/{unrendered}")]
    assert stored_alerts(ehr, rendered) == []


def test_a_message_nobody_renders_alerts_each_participant_exactly_once(
        world: World, receivers: dict[str, Receiver], mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    ehr, portal, dashboard = world.system("ehr"), world.system("portal"), world.system("dashboard")
    # The GP is subscribed for by two systems; Anna by the portal.
    subscribe(ehr, receivers["ehr"].url, world.ref("gray"))
    subscribe(dashboard, receivers["dashboard"].url, world.ref("gray"))
    subscribe(portal, receivers["portal"].url, world.ref("anna"))
    opens_inbox(world, "gray", "ehr")
    thread_id = two_person_thread(world)
    sent_at = time.monotonic()
    m = world.person("anna", "portal").post(
        "/Communication", json=message(thread_id, "Can I stop the pills?", world.ref("anna"))).json()["id"]
    for name in ("ehr", "dashboard"):
        receivers[name].wait_for(lambda _, n=name: len(alerts(receivers[n])) >= 1, timeout=GRACE + 20)
    assert time.monotonic() - sent_at >= GRACE  # not before the grace period
    wait_decided(mongo, messaging_server, m)
    assert alerts(receivers["ehr"]) == alerts(receivers["dashboard"]) == [(world.ref("gray"), f"Communication/{m}")]
    assert alerts(receivers["portal"]) == []  # the sender is not alerted of her own message
    assert stored_alerts(ehr, m) == [world.ref("gray")]
    claims = mongo[messaging_server.settings.database][store.CLAIMS].count_documents({"message": m})
    assert claims == 1


def test_consent_denying_the_daughter_she_neither_sees_the_thread_nor_is_alerted(
        world: World, receivers: dict[str, Receiver], mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    anna = world.person("anna", "portal")
    reply = anna.post("/Consent", json=consent({"type": "deny", "actor": [actor(world.ref("clara"))],
                                                "class": classes("Communication")}, patient=f"anna{world.u}"))
    assert reply.status_code == 201, reply.text
    portal = world.system("portal")
    subscribe(portal, receivers["portal"].url, world.ref("clara"))
    for who, via in (("anna", "portal"), ("chen", "dashboard"), ("clara", "portal")):
        opens_inbox(world, who, via)
    subscribe(world.system("dashboard"), receivers["dashboard"].url, world.ref("chen"))
    gp = world.person("gray", "ehr")
    thread_id = gp.post("/Communication", json=world.thread_header()).json()["id"]
    m = gp.post("/Communication", json=message(thread_id, "Results are in")).json()["id"]
    clara = world.person("clara", "portal")
    assert clara.get(f"/Communication/{thread_id}").status_code == 403
    assert clara.get(f"/Communication/{m}").status_code == 403
    assert clara.get("/Communication", params={"participant": world.ref("clara")}).json().get("entry") is None
    inbox = clara.get("/Communication/$render-state", params={"participant": world.ref("clara")})
    assert inbox.status_code == 200 and [p["name"] for p in inbox.json()["parameter"]] == ["participant"]
    # The operation reads the thread as a search does: hidden is not known.
    assert clara.get(f"/Communication/{thread_id}/$render-state").status_code == 404
    assert clara.post("/Communication", json=message(thread_id, "Hi", world.ref("anna"))).status_code == 403
    # Chen (through the CareTeam) is alerted: the decision for everyone was taken then.
    receivers["dashboard"].wait_for(lambda _: len(alerts(receivers["dashboard"])) >= 1, timeout=GRACE + 20)
    wait_decided(mongo, messaging_server, m)
    assert alerts(receivers["portal"]) == []
    assert world.ref("clara") not in stored_alerts(world.system("ehr"), m)
    assert set(stored_alerts(world.system("ehr"), m)) == {world.ref("anna"), world.ref("chen")}


def test_two_server_processes_alert_each_participant_once(
        world: World, receivers: dict[str, Receiver], mongodb_uri: str, mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    ehr = world.system("ehr")
    subscribe(ehr, receivers["ehr"].url, world.ref("gray"))
    # A second process of the same deployment: same database, same base URL (token issuer).
    second = fast_settings(mongodb_uri, "fhir_messaging", auth_enabled=True,
                           base_url=messaging_server.settings.base_url, workflows=WorkflowSettings(builtin=True))
    opens_inbox(world, "gray", "ehr")
    with RunningServer(second) as other:
        thread_id = two_person_thread(world)
        anna = world.person("anna", "portal")
        with httpx.Client(base_url=f"http://127.0.0.1:{other.settings.port}/fhir", timeout=60,
                          headers=dict(anna.headers)) as anna_elsewhere:
            sent = []
            for i in range(6):
                client = anna if i % 2 else anna_elsewhere
                reply = client.post("/Communication", json=message(thread_id, f"note {i}", world.ref("anna")))
                assert reply.status_code == 201, reply.text
                sent.append(reply.json()["id"])
        receivers["ehr"].wait_for(lambda _: len(alerts(receivers["ehr"])) >= 6, timeout=GRACE + 30)
        wait_decided(mongo, messaging_server, *sent)
    assert sorted(alerts(receivers["ehr"])) == sorted((world.ref("gray"), f"Communication/{m}") for m in sent)
    for m in sent:
        assert stored_alerts(ehr, m) == [world.ref("gray")]


def test_the_claim_is_taken_once_by_sixteen_contenders(mongodb_uri: str, messaging_server: RunningServer) -> None:
    async def contend() -> list[bool]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            db = client[messaging_server.settings.database]
            key = f"m-{time.monotonic_ns()}"
            return list(await asyncio.gather(*(store.claim(db, key, "Patient/p", f"owner-{i}") for i in range(16))))
        finally:
            await client.close()

    assert sorted(asyncio.run(contend())) == [False] * 15 + [True]


def test_without_a_grant_the_server_holds_for_the_participant_no_alert(
        world: World, receivers: dict[str, Receiver], mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    """The server never makes a grant up: the GP has never acted in a thread (no verified
    authorization of his is recorded), so he is not alerted, though the EHR subscribed for
    him; once his token is revoked, the grant it recorded no longer counts either."""
    subscribe(world.system("ehr"), receivers["ehr"].url, world.ref("gray"))
    thread_id = two_person_thread(world)
    anna = world.person("anna", "portal")
    first = anna.post("/Communication", json=message(thread_id, "Any news?", world.ref("anna"))).json()["id"]
    wait_decided(mongo, messaging_server, first)
    assert stored_alerts(world.system("ehr"), first) == []
    # He opens his inbox with a token that is then revoked: still no alert.
    token = world._person_token("gray", "ehr")
    with httpx.Client(base_url=messaging_server.settings.base_url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as gp:
        reply = gp.get("/Communication/$render-state", params={"participant": world.ref("gray")})
        assert reply.status_code == 200, reply.text
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    mongo[messaging_server.settings.database]["auth_revoked"].insert_one(
        {"_id": claims["jti"], "expires_at": datetime.fromtimestamp(claims["exp"], UTC)})
    second = anna.post("/Communication", json=message(thread_id, "Hello?", world.ref("anna"))).json()["id"]
    wait_decided(mongo, messaging_server, second)
    assert stored_alerts(world.system("ehr"), second) == []
    assert alerts(receivers["ehr"]) == []
    # A grant he holds (a token not revoked): the next message alerts him.
    opens_inbox(world, "gray", "ehr")
    third = anna.post("/Communication", json=message(thread_id, "Still there?", world.ref("anna"))).json()["id"]
    receivers["ehr"].wait_for(lambda _: len(alerts(receivers["ehr"])) >= 1, timeout=GRACE + 20)
    wait_decided(mongo, messaging_server, third)
    assert alerts(receivers["ehr"]) == [(world.ref("gray"), f"Communication/{third}")]


def test_the_participants_communication_preferences_decide_the_alerts_channel(
        world: World, receivers: dict[str, Receiver], mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    """The GP prefers SMS (his telecom of rank 1): his alert goes by SMSWRIT, so the system
    subscribed for his SMS alerts is notified and the one for his email alerts is not."""
    admin = world.system("dashboard")
    gray = world.ref("gray")
    reply = admin.put(f"/{gray}", json={
        "resourceType": "Practitioner", "id": gray.split("/")[1], "telecom": [
            {"system": "email", "value": "gray@gp.example", "rank": 2},
            {"system": "sms", "value": "+15550100", "rank": 1}]})
    assert reply.status_code == 200, reply.text
    subscribe(world.system("ehr"), receivers["ehr"].url, f"{gray}&channel=SMSWRIT")
    subscribe(world.system("dashboard"), receivers["dashboard"].url, f"{gray}&channel=EMAILWRIT")
    opens_inbox(world, "gray", "ehr")
    thread_id = two_person_thread(world)
    m = world.person("anna", "portal").post(
        "/Communication", json=message(thread_id, "Pharmacy called", world.ref("anna"))).json()["id"]
    receivers["ehr"].wait_for(lambda _: len(alerts(receivers["ehr"])) >= 1, timeout=GRACE + 20)
    wait_decided(mongo, messaging_server, m)
    assert alerts(receivers["ehr"]) == [(gray, f"Communication/{m}")]
    assert alerts(receivers["dashboard"]) == []
    found = admin.get("/Basic", params={"code": f"{TAG}|unrendered", "subject": f"Communication/{m}",
                                        "channel": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode|SMSWRIT"})
    assert [e["resource"]["author"]["reference"] for e in found.json().get("entry", [])] == [gray]


def test_a_recorded_grant_lapses_when_its_token_expires(
        world: World, receivers: dict[str, Receiver], mongo: MongoClient[dict[str, Any]],
        messaging_server: RunningServer) -> None:
    """The GP opened his inbox with a short-lived token and has not come back since: once
    that token has expired the server no longer holds his authorization, so a new message
    does not alert him (fail closed), though it was never revoked. A fresh token's grant
    alerts him again."""
    subscribe(world.system("ehr"), receivers["ehr"].url, world.ref("gray"))
    thread_id = two_person_thread(world)
    scope, _, user = world.people["gray"]
    settings = messaging_server.settings

    async def short_lived() -> str:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                        fhir_user=user, client_id="ehr", ttl=2)
        finally:
            await client.close()

    token = asyncio.run(short_lived())
    with httpx.Client(base_url=settings.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as gp:
        reply = gp.get("/Communication/$render-state", params={"participant": world.ref("gray")})
        assert reply.status_code == 200, reply.text
    grant = mongo[settings.database][store.GRANTS].find_one({"participant": world.ref("gray"), "client": "ehr"})
    assert grant is not None
    expires = claims_of(token)["exp"]
    assert int(grant["expires"].replace(tzinfo=UTC).timestamp()) == expires
    wait_until(lambda: time.time() > expires + 0.5, timeout=10, what="the GP's token expired")
    anna = world.person("anna", "portal")
    lapsed = anna.post("/Communication", json=message(thread_id, "Any news?", world.ref("anna"))).json()["id"]
    wait_decided(mongo, messaging_server, lapsed)
    assert stored_alerts(world.system("ehr"), lapsed) == []
    assert alerts(receivers["ehr"]) == []
    # He comes back with a token that is still valid: the next message alerts him once.
    opens_inbox(world, "gray", "ehr")
    held = anna.post("/Communication", json=message(thread_id, "Hello?", world.ref("anna"))).json()["id"]
    receivers["ehr"].wait_for(lambda _: len(alerts(receivers["ehr"])) >= 1, timeout=GRACE + 20)
    wait_decided(mongo, messaging_server, held)
    assert alerts(receivers["ehr"]) == [(world.ref("gray"), f"Communication/{held}")]


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return payload
