"""Render cursors: forward only per (participant, source), who may set them, concurrent
updates, $render-state per thread and as an inbox, versions with Provenance, retention,
rebuild from the message history."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.messaging import store
from fhir_server.messaging.render_state import state_id
from fhir_server.messaging.settings import RENDER_RETENTION
from tests.conftest import RunningServer
from tests.messaging.conftest import World, cursor_parameters, message, part, ref
from tests.subscriptions.conftest import wait_until


def thread_with_messages(world: World, n: int) -> tuple[str, list[str]]:
    gp = world.person("gray", "ehr")
    reply = gp.post("/Communication", json=world.thread_header())
    assert reply.status_code == 201, reply.text
    thread_id = reply.json()["id"]
    ids = []
    for i in range(n):
        sent = gp.post("/Communication", json=message(thread_id, f"message {i + 1}"))
        assert sent.status_code == 201, sent.text
        ids.append(sent.json()["id"])
    return thread_id, ids


def of_participant(state: dict[str, Any], participant: str) -> dict[str, Any]:
    for p in part(state, "participant"):
        parts = p.get("part") or []
        if parts and parts[0].get("valueReference", {}).get("reference") == participant:
            cursors = {}
            for c in (x for x in parts if x["name"] == "cursor"):
                values = {y["name"]: next(v for k, v in y.items() if k.startswith("value")) for y in c["part"]}
                cursors[values["source"]] = values
            furthest = next((x["valueReference"]["reference"] for x in parts if x["name"] == "furthest"), None)
            beyond = next(x["valueInteger"] for x in parts if x["name"] == "beyond")
            return {"cursors": cursors, "furthest": furthest, "beyond": beyond}
    raise AssertionError(f"{participant} not in {state}")


def set_cursor(client: httpx.Client, thread_id: str, participant: str, message_id: str, **kw: Any) -> httpx.Response:
    return client.post(f"/Communication/{thread_id}/$render-cursor",
                       json=cursor_parameters(participant, message_id, **kw))


def test_a_cursor_only_moves_forward_and_an_older_message_changes_nothing(world: World) -> None:
    thread_id, (m1, m2, m3) = thread_with_messages(world, 3)
    anna = world.person("anna", "portal")
    reply = set_cursor(anna, thread_id, world.ref("anna"), m2)
    assert reply.status_code == 200, reply.text
    mine = of_participant(reply.json(), world.ref("anna"))
    assert mine["cursors"]["portal"]["message"] == {"reference": f"Communication/{m2}"}
    assert mine["furthest"] == f"Communication/{m2}" and mine["beyond"] == 1
    admin = world.system("dashboard")
    rid = state_id(thread_id, world.ref("anna"))
    assert admin.get(f"/Basic/{rid}").json()["meta"]["versionId"] == "1"

    older = set_cursor(anna, thread_id, world.ref("anna"), m1)
    assert older.status_code == 200
    assert of_participant(older.json(), world.ref("anna"))["furthest"] == f"Communication/{m2}"
    assert admin.get(f"/Basic/{rid}").json()["meta"]["versionId"] == "1"  # no new version

    newer = set_cursor(anna, thread_id, world.ref("anna"), m3)
    assert of_participant(newer.json(), world.ref("anna"))["beyond"] == 0
    assert admin.get(f"/Basic/{rid}").json()["meta"]["versionId"] == "2"


def test_two_systems_advancing_cursors_at_once_are_both_kept_and_the_furthest_counts(world: World) -> None:
    thread_id, ids = thread_with_messages(world, 4)
    portal = world.person("anna", "portal")
    dashboard = world.system("dashboard")  # a system/ client naming Anna
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(set_cursor, portal, thread_id, world.ref("anna"), ids[1])
        b = pool.submit(set_cursor, dashboard, thread_id, world.ref("anna"), ids[3])
        assert a.result().status_code == 200 and b.result().status_code == 200
    state = dashboard.get(f"/Communication/{thread_id}/$render-state").json()
    mine = of_participant(state, world.ref("anna"))
    assert set(mine["cursors"]) == {"portal", "dashboard"}
    assert mine["furthest"] == f"Communication/{ids[3]}" and mine["beyond"] == 0


def test_sixteen_concurrent_cursor_updates_the_furthest_wins(world: World) -> None:
    thread_id, ids = thread_with_messages(world, 16)
    clients = [world.person("gray", "ehr") for _ in range(4)]
    order = [ids[i] for i in (5, 15, 0, 9, 3, 12, 7, 1, 14, 2, 10, 4, 13, 6, 11, 8)]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: set_cursor(clients[i % 4], thread_id, world.ref("gray"), order[i]),
                                range(16)))
    assert [r.status_code for r in replies] == [200] * 16, [r.text for r in replies if r.status_code != 200]
    admin = world.system("dashboard")
    state = of_participant(admin.get(f"/Communication/{thread_id}/$render-state").json(), world.ref("gray"))
    assert state["cursors"]["ehr"]["message"] == {"reference": f"Communication/{ids[15]}"}
    assert state["beyond"] == 0
    # Every version moved the cursor forward: positions strictly increase through history.
    history = admin.get(f"/Basic/{state_id(thread_id, world.ref('gray'))}/_history", params={"_count": "50"}).json()
    positions = []
    for entry in reversed(history["entry"]):
        cursor = next(e for e in entry["resource"]["extension"] if e["url"].endswith("render-cursor"))
        positions.append(next(x["valueInteger"] for x in cursor["extension"] if x["url"] == "position"))
    assert positions == sorted(set(positions)) and positions[-1] == 16


def test_who_may_set_a_cursor(world: World) -> None:
    thread_id, (m1,) = thread_with_messages(world, 1)
    anna = world.person("anna", "portal")
    refused = set_cursor(anna, thread_id, world.ref("clara"), m1)
    assert refused.status_code == 403, refused.text
    assert set_cursor(world.system("portal"), thread_id, world.ref("clara"), m1).status_code == 200
    assert set_cursor(world.person("paul", "ehr"), thread_id, world.ref("paul"), m1).status_code == 404
    not_in = set_cursor(world.system("ehr"), thread_id, world.ref("paul"), m1)
    assert not_in.status_code == 422 and "does not take part" in not_in.text
    _, (elsewhere,) = thread_with_messages(world, 1)
    wrong = set_cursor(anna, thread_id, world.ref("anna"), elsewhere)
    assert wrong.status_code == 422 and "not a message of" in wrong.text
    assert set_cursor(anna, thread_id, world.ref("anna"), thread_id).status_code == 422  # the header
    assert anna.post(f"/Communication/{m1}/$render-cursor",
                     json=cursor_parameters(world.ref("anna"), m1)).status_code == 422  # not a thread
    bad = [
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": [{"name": "participant", "valueString": "x"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "participant", "valueReference": {"reference": "Patient/a"}}]},
        {**cursor_parameters(world.ref("anna"), m1), "parameter": [
            *cursor_parameters(world.ref("anna"), m1)["parameter"], {"name": "seen", "valueBoolean": True}]},
        cursor_parameters(world.ref("anna"), m1, recorded_at="yesterday"),
    ]
    for body in bad:
        reply = anna.post(f"/Communication/{thread_id}/$render-cursor", json=body)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["resourceType"] == "OperationOutcome"
    # Render state is written only through the operation.
    assert anna.put(f"/Basic/{state_id(thread_id, world.ref('anna'))}", json={
        "resourceType": "Basic", "id": state_id(thread_id, world.ref("anna")),
        "code": {"coding": [{"system": "http://fhir.care-coord.example/CodeSystem/messaging",
                             "code": "render-state"}]},
        "meta": {"tag": [{"system": "http://fhir.care-coord.example/CodeSystem/messaging",
                          "code": "render-state"}]}}).status_code == 403


def test_every_change_is_a_version_with_who_which_source_and_which_care_location(world: World) -> None:
    thread_id, (m1, m2) = thread_with_messages(world, 2)
    gp = world.person("gray", "ehr")
    assert set_cursor(gp, thread_id, world.ref("gray"), m1).status_code == 200
    assert set_cursor(gp, thread_id, world.ref("gray"), m2, source="ehr-inbox-view",
                      recorded_at="2026-12-01T10:00:00Z").status_code == 200
    rid = state_id(thread_id, world.ref("gray"))
    admin = world.system("dashboard")
    history = admin.get(f"/Basic/{rid}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    auditor = world.client(world.token("system/Provenance.rs", client_id="auditor"))
    provenances = auditor.get("/Provenance", params={"target": f"Basic/{rid}"}).json()["entry"]
    by_version = {p["resource"]["target"][0]["reference"]: p["resource"] for p in provenances}
    second = by_version[f"Basic/{rid}/_history/2"]
    assert second["location"] == {"reference": f"Location/gp-practice{world.u}"}
    assert {"reference": world.ref("gray")} in [a["who"] for a in second["agent"]]
    assert {"identifier": {"value": "ehr"}} in [a["who"] for a in second["agent"]]
    assert second["extension"][0]["valueString"] == "ehr-inbox-view"
    assert by_version[f"Basic/{rid}/_history/1"]["extension"][0]["valueString"] == "ehr"
    state = of_participant(admin.get(f"/Communication/{thread_id}/$render-state").json(), world.ref("gray"))
    assert state["cursors"]["ehr-inbox-view"]["recordedAt"] == "2026-12-01T10:00:00.000Z"


def test_old_versions_are_dropped_after_the_retention_period(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    thread_id, ids = thread_with_messages(world, 3)
    anna = world.person("anna", "portal")
    rid = state_id(thread_id, world.ref("anna"))
    admin = world.system("dashboard")
    for m in ids[:2]:
        assert set_cursor(anna, thread_id, world.ref("anna"), m).status_code == 200
    assert len(admin.get(f"/Basic/{rid}/_history").json()["entry"]) == 2  # within the period
    monkeypatch.setenv(RENDER_RETENTION, "0")
    assert set_cursor(anna, thread_id, world.ref("anna"), ids[2]).status_code == 200
    versions = [e["resource"]["meta"]["versionId"] for e in admin.get(f"/Basic/{rid}/_history").json()["entry"]]
    assert versions == ["3"]


def test_the_inbox_in_one_request(world: World) -> None:
    first, ids = thread_with_messages(world, 3)
    second, _ = thread_with_messages(world, 2)
    anna = world.person("anna", "portal")
    assert set_cursor(anna, first, world.ref("anna"), ids[0]).status_code == 200
    reply = anna.get("/Communication/$render-state", params={"participant": world.ref("anna")})
    assert reply.status_code == 200, reply.text
    rows = {}
    for t in part(reply.json(), "thread"):
        values = {p["name"]: p for p in t["part"]}
        rows[values["thread"]["valueReference"]["reference"]] = (values["messages"]["valueInteger"],
                                                                 values["beyond"]["valueInteger"])
    assert rows == {f"Communication/{first}": (3, 2), f"Communication/{second}": (2, 2)}
    # Someone else's inbox is theirs (or a system's) to ask for.
    assert anna.get("/Communication/$render-state", params={"participant": world.ref("gray")}).status_code == 403
    assert anna.get("/Communication/$render-state", params={"participant": "nonsense"}).status_code == 400
    paul = world.person("paul", "ehr")
    empty = paul.get("/Communication/$render-state", params={"participant": world.ref("paul")}).json()
    assert part(empty, "thread") == []


def test_rebuild_after_deleting_all_render_state(world: World) -> None:
    thread_id, (_, m2) = thread_with_messages(world, 2)
    anna = world.person("anna", "portal")
    reply = anna.post("/Communication", json=message(thread_id, "Thanks!", world.ref("anna")))
    assert reply.status_code == 201
    m3 = reply.json()["id"]
    admin = world.system("dashboard")
    for who, m in (("anna", m3), ("gray", m2)):
        assert set_cursor(admin, thread_id, world.ref(who), m).status_code == 200
    for who in ("anna", "gray"):
        assert admin.delete(f"/Basic/{state_id(thread_id, world.ref(who))}").status_code == 200
    lost = admin.get(f"/Communication/{thread_id}/$render-state").json()
    assert of_participant(lost, world.ref("anna"))["cursors"] == {}
    assert of_participant(lost, world.ref("anna"))["beyond"] == 3
    rebuilt = admin.get(f"/Communication/{thread_id}/$render-state", params={"rebuild": "true"}).json()
    anna_state = of_participant(rebuilt, world.ref("anna"))
    assert anna_state["furthest"] == f"Communication/{m3}" and anna_state["beyond"] == 0
    assert list(anna_state["cursors"]) == ["portal"]  # the system she posted from
    gray_state = of_participant(rebuilt, world.ref("gray"))
    assert gray_state["furthest"] == f"Communication/{m2}" and gray_state["beyond"] == 1
    assert of_participant(rebuilt, world.ref("clara"))["beyond"] == 3  # never posted: nothing known
    assert admin.get(f"/Communication/{thread_id}/$render-state", params={"rebuild": "yes"}).status_code == 400


_READ_WORDS = re.compile(r"\b(read|seen|saw|acknowledg\w*)\b", re.IGNORECASE)


def test_nothing_says_a_person_read_a_message(world: World) -> None:
    thread_id, (m1,) = thread_with_messages(world, 1)
    reply = set_cursor(world.person("anna", "portal"), thread_id, world.ref("anna"), m1)
    names = json.dumps([p["name"] for p in reply.json()["parameter"]]) + json.dumps(
        [x["name"] for p in reply.json()["parameter"] for x in p.get("part", [])])
    assert not _READ_WORDS.search(names)
    profiles = Path(__file__).resolve().parents[2] / "profiles"
    for name in ("OperationDefinition-Communication-render-cursor.json",
                 "OperationDefinition-Communication-render-state.json",
                 "SubscriptionTopic-communication-unrendered.json"):
        definition = json.loads((profiles / name).read_text())
        codes = [definition.get("code", ""), definition.get("name", ""), definition.get("title", ""),
                 *(p["name"] for p in definition.get("parameter", []))]
        assert not _READ_WORDS.search(" ".join(codes)), name


def inbox_rows(client: httpx.Client, who: str) -> dict[str, tuple[int, int]]:
    reply = client.get("/Communication/$render-state", params={"participant": who})
    assert reply.status_code == 200, reply.text
    rows = {}
    for t in part(reply.json(), "thread"):
        values = {p["name"]: p for p in t["part"]}
        rows[values["thread"]["valueReference"]["reference"]] = (values["messages"]["valueInteger"],
                                                                 values["beyond"]["valueInteger"])
    return rows


def test_the_inbox_is_read_from_indexes_not_from_every_communication(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    """The participant search (the inbox's access-checked read, and a client's own search for
    their threads) is answered from an index on the participant values, and a participant's
    inbox rows by one equality on theirs: neither scans the collection."""
    thread_with_messages(world, 1)
    db = mongo[messaging_server.settings.database]

    def stages(plan: dict[str, Any]) -> set[str]:
        found = {str(plan.get("stage"))}
        for key in ("inputStage", "queryPlan"):
            if isinstance(plan.get(key), dict):
                found |= stages(plan[key])
        for child in plan.get("inputStages") or []:
            found |= stages(child)
        return found

    explained = db["Communication"].find({"sp.participant": world.ref("anna")}).explain()
    assert "IXSCAN" in stages(explained["queryPlanner"]["winningPlan"]), explained
    rows = db[store.INBOX].find({"participant": world.ref("anna")}).explain()
    assert "IXSCAN" in stages(rows["queryPlanner"]["winningPlan"]), rows


def test_the_inbox_rows_follow_messages_cursors_new_members_and_lost_render_state(world: World) -> None:
    thread_id, ids = thread_with_messages(world, 2)
    anna, admin = world.person("anna", "portal"), world.system("dashboard")
    key = f"Communication/{thread_id}"
    assert inbox_rows(anna, world.ref("anna"))[key] == (2, 2)
    assert set_cursor(anna, thread_id, world.ref("anna"), ids[1]).status_code == 200
    assert inbox_rows(anna, world.ref("anna"))[key] == (2, 0)
    # Dr. Paul joins through the CareTeam after two messages: his row starts from them.
    team = admin.get(f"/CareTeam/team{world.u}").json()
    team["participant"].append({"member": ref(world.ref("paul"))})
    assert admin.put(f"/CareTeam/team{world.u}", json=team).status_code == 200
    paul = world.person("paul", "ehr")
    wait_until(lambda: key in inbox_rows(paul, world.ref("paul")), what="Paul's inbox names the thread")
    assert inbox_rows(paul, world.ref("paul"))[key] == (2, 2)
    reply = world.person("gray", "ehr").post("/Communication", json=message(thread_id, "One more"))
    assert reply.status_code == 201, reply.text
    assert inbox_rows(anna, world.ref("anna"))[key] == (3, 1)
    assert inbox_rows(paul, world.ref("paul"))[key] == (3, 3)
    # Render state deleted: the row forgets the cursor with it.
    assert admin.delete(f"/Basic/{state_id(thread_id, world.ref('anna'))}").status_code == 200
    assert inbox_rows(anna, world.ref("anna"))[key] == (3, 3)
    # 16 inboxes at once answer the same.
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: inbox_rows(anna, world.ref("anna"))[key], range(16)))
    assert answers == [(3, 3)] * 16
