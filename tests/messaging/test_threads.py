"""Threads: headers and messages, the sender set by the server, immutability, the participant
index (one search), and who may post."""

from __future__ import annotations

from tests.messaging.conftest import TAG, World, cursor_parameters, message, ref
from tests.subscriptions.conftest import wait_until


def start_thread(world: World) -> tuple[str, dict]:
    gp = world.person("gray", "ehr")
    reply = gp.post("/Communication", json=world.thread_header())
    assert reply.status_code == 201, reply.text
    return reply.json()["id"], reply.json()


def test_a_header_is_marked_and_its_sender_and_participants_are_the_servers(world: World) -> None:
    _, header = start_thread(world)
    assert header["sender"] == ref(world.ref("gray"))
    assert {"system": TAG, "code": "thread"} in header["meta"]["tag"]
    members = [e["valueReference"]["reference"] for e in header["extension"]]
    # recipients, the sender and the CareTeam's current member
    assert set(members) == {world.ref("anna"), world.ref("clara"), f"CareTeam/team{world.u}",
                            world.ref("gray"), world.ref("chen")}


def test_a_client_cannot_send_as_someone_else(world: World) -> None:
    thread_id, _ = start_thread(world)
    anna = world.person("anna", "portal")
    reply = anna.post("/Communication", json=message(thread_id, "Hello", world.ref("anna"),
                                                          sender=ref(world.ref("gray"))))
    assert reply.status_code == 201, reply.text
    assert reply.json()["sender"] == ref(world.ref("anna"))
    assert {"system": TAG, "code": "message"} in reply.json()["meta"]["tag"]


def test_one_search_finds_a_participants_threads_including_through_a_careteam(world: World) -> None:
    thread_id, _ = start_thread(world)
    chen = world.person("chen", "dashboard")
    found = chen.get("/Communication", params={"participant": world.ref("chen"), "_tag": f"{TAG}|thread"})
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [thread_id]


def test_a_non_participant_can_neither_post_nor_see(world: World) -> None:
    thread_id, _ = start_thread(world)
    gp = world.person("gray", "ehr")
    posted = gp.post("/Communication", json=message(thread_id, "Readings look fine"))
    assert posted.status_code == 201
    paul = world.person("paul", "ehr")
    reply = paul.post("/Communication", json=message(thread_id, "I am not in this thread"))
    assert reply.status_code == 403, reply.text
    assert "participant" in reply.json()["issue"][0]["diagnostics"]
    assert paul.get(f"/Communication/{thread_id}").status_code == 404
    assert paul.get(f"/Communication/{posted.json()['id']}").status_code == 404
    assert paul.get("/Communication", params={"part-of": f"Communication/{thread_id}"}).json().get("entry") is None
    assert paul.get(f"/Communication/{thread_id}/_history").json().get("entry") is None
    assert paul.get("/Communication/_history").json().get("entry") is None
    assert paul.get("/Communication", params={"_id": posted.json()["id"], "_include": "Communication:part-of"}
                    ).json().get("entry") is None


def test_messages_are_immutable_but_the_sender_may_mark_one_entered_in_error(world: World) -> None:
    thread_id, _ = start_thread(world)
    gp = world.person("gray", "ehr")
    sent = gp.post("/Communication", json=message(thread_id, "Take 10 mg")).json()
    changed = {**sent, "payload": [{"contentString": "Take 20 mg"}]}
    reply = gp.put(f"/Communication/{sent['id']}", json=changed)
    assert reply.status_code == 409, reply.text
    assert "immutable" in reply.json()["issue"][0]["diagnostics"]
    anna = world.person("anna", "portal")
    assert anna.put(f"/Communication/{sent['id']}", json={**sent, "status": "entered-in-error"}).status_code == 409
    assert gp.delete(f"/Communication/{sent['id']}").status_code == 409
    reply = gp.put(f"/Communication/{sent['id']}", json={**sent, "status": "entered-in-error"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "entered-in-error"
    assert gp.get(f"/Communication/{sent['id']}").json()["payload"] == [{"contentString": "Take 10 mg"}]


def test_a_care_team_change_reaches_the_threads_that_name_it(world: World) -> None:
    thread_id, _ = start_thread(world)
    admin = world.system("dashboard")
    team = admin.get(f"/CareTeam/team{world.u}").json()
    team["participant"] = [{"member": ref(world.ref("paul"))}]  # Dr. Chen leaves, Dr. Paul joins
    assert admin.put(f"/CareTeam/team{world.u}", json=team).status_code == 200
    paul, chen = world.person("paul", "ehr"), world.person("chen", "ehr")
    wait_until(lambda: paul.get(f"/Communication/{thread_id}").status_code == 200, what="Paul sees the thread")
    assert chen.get(f"/Communication/{thread_id}").status_code == 404
    found = paul.get("/Communication", params={"participant": world.ref("paul"), "_tag": f"{TAG}|thread"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [thread_id]
    versions = admin.get(f"/Communication/{thread_id}/_history").json()["entry"]
    assert len(versions) == 2  # one new version of the header, by the server


def test_a_participant_adds_someone_to_the_header_and_it_stays_a_header(world: World) -> None:
    thread_id, header = start_thread(world)
    anna = world.person("anna", "portal")
    added = {**header, "recipient": [*header["recipient"], ref(world.ref("paul"))]}
    reply = anna.put(f"/Communication/{thread_id}", json=added)
    assert reply.status_code == 200, reply.text
    assert reply.json()["sender"] == ref(world.ref("gray"))  # the sender stays the GP
    assert world.ref("paul") in [e["valueReference"]["reference"] for e in reply.json()["extension"]]
    other, _ = start_thread(world)
    as_message = {**reply.json(), "partOf": [ref(f"Communication/{other}")]}
    refused = anna.put(f"/Communication/{thread_id}", json=as_message)
    assert refused.status_code == 422, refused.text
    assert "thread header" in refused.json()["issue"][0]["diagnostics"]
    # Paul takes part in the first thread now, not in the other: he cannot change it (the
    # write pipeline answers 403 for a resource hidden from the writer).
    stranger = world.person("paul", "ehr")
    assert stranger.get(f"/Communication/{thread_id}").status_code == 200
    taken_over = {**header, "id": other, "recipient": [ref(world.ref("paul"))]}
    assert stranger.put(f"/Communication/{other}", json=taken_over).status_code == 403


def test_a_message_posted_in_the_same_transaction_as_its_header_is_recognised(world: World) -> None:
    """A Bundle that opens a thread with its first message: the message is a message of the
    thread (marked, numbered, with the thread's participants) like one posted after it."""
    gp = world.person("gray", "ehr")
    first = {k: v for k, v in message("x", "First note").items() if k != "partOf"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7f1c3c52-8f0e-4b59-9a39-6a3a2f1f0a01", "resource": world.thread_header(),
         "request": {"method": "POST", "url": "Communication"}},
        {"resource": {**first, "partOf": [ref("urn:uuid:7f1c3c52-8f0e-4b59-9a39-6a3a2f1f0a01")]},
         "request": {"method": "POST", "url": "Communication"}}]}
    reply = gp.post("/", json=bundle)
    assert reply.status_code == 200, reply.text
    thread_id, message_id = (e["response"]["location"].split("/")[1] for e in reply.json()["entry"])
    posted = gp.get(f"/Communication/{message_id}").json()
    assert {"system": TAG, "code": "message"} in posted["meta"]["tag"]
    assert posted["sender"] == ref(world.ref("gray"))
    assert posted["subject"] == ref(world.ref("anna"))
    assert {e["valueReference"]["reference"] for e in posted["extension"]} >= {world.ref("anna"), world.ref("chen")}
    state = gp.get(f"/Communication/{thread_id}/$render-state").json()
    assert [p["valueInteger"] for p in state["parameter"] if p["name"] == "messages"] == [1]
    inbox = world.person("anna", "portal").get("/Communication/$render-state",
                                               params={"participant": world.ref("anna")}).json()
    rows = [{q["name"]: q.get("valueInteger", q.get("valueReference")) for q in p["part"] if q["name"] != "lastActivity"}
            for p in inbox["parameter"] if p["name"] == "thread"]
    assert rows == [{"thread": ref(f"Communication/{thread_id}"), "messages": 1, "beyond": 1}]
    # It cannot be changed like any message (immutability applies to it too).
    assert gp.put(f"/Communication/{message_id}", json={**posted, "payload": [{"contentString": "x"}]}).status_code == 409


def test_a_message_before_its_header_in_the_transaction_is_refused_not_stored_unguarded(world: World) -> None:
    gp = world.person("gray", "ehr")
    first = {k: v for k, v in message("x", "First note").items() if k != "partOf"}
    header_url = "urn:uuid:0c7d2a8e-5b1f-4c3a-9e2d-1f0a9b8c7d6e"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**first, "partOf": [ref(header_url)]}, "request": {"method": "POST", "url": "Communication"}},
        {"fullUrl": header_url, "resource": world.thread_header(),
         "request": {"method": "POST", "url": "Communication"}}]}
    reply = gp.post("/", json=bundle)
    assert reply.status_code == 422, reply.text
    assert "must come before it" in reply.text
    found = gp.get("/Communication", params={"participant": world.ref("gray"), "_tag": f"{TAG}|thread"}).json()
    assert found.get("entry") is None  # nothing of the Bundle was written


def test_a_user_in_the_patients_context_is_not_the_patient(world: World) -> None:
    """A family member acting for Anna, or a doctor launched in Anna's record, takes part as
    themself: they neither see Anna's other threads nor act as her in them."""
    u = world.u
    anna = world.person("anna", "portal")
    private = anna.post("/Communication", json={
        "resourceType": "Communication", "status": "in-progress", "subject": ref(world.ref("anna")),
        "topic": {"text": "Just between Dr. Gray and me"},
        "recipient": [ref(world.ref("gray"))]})
    assert private.status_code == 201, private.text
    said = anna.post("/Communication", json=message(private.json()["id"], "A private question", world.ref("anna")))
    assert said.status_code == 201, said.text
    # Dr. Paul, launched by the EHR in Anna's record; Clara, with Anna in context.
    paul = world.client(world.token("user/*.cruds", client_id="ehr", patient=f"anna{u}",
                                    fhir_user=f"Practitioner/paul{u}"))
    clara = world.person("clara", "portal")
    for outsider in (paul, clara):
        assert outsider.get(f"/Communication/{private.json()['id']}").status_code == 404
        assert outsider.get("/Communication", params={"part-of": f"Communication/{private.json()['id']}"}
                            ).json().get("entry") is None
    # In a thread Clara takes part in, she still is not Anna.
    thread_id, _ = start_thread(world)
    annas = anna.post("/Communication", json=message(thread_id, "Readings attached", world.ref("anna"))).json()
    withdrawn = clara.put(f"/Communication/{annas['id']}", json={**annas, "status": "entered-in-error"})
    assert withdrawn.status_code == 409, withdrawn.text
    cursor = clara.post(f"/Communication/{thread_id}/$render-cursor",
                        json=cursor_parameters(world.ref("anna"), annas["id"]))
    assert cursor.status_code == 403, cursor.text
    assert clara.post(f"/Communication/{thread_id}/$render-cursor",
                      json=cursor_parameters(world.ref("clara"), annas["id"])).status_code == 200
