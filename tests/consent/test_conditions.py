"""Provision conditions on the data: security labels (a high-water mark), codes, data
references by meaning, data period; and the action (access versus correct)."""

from __future__ import annotations

from typing import Any

from tests.consent.conftest import CONFIDENTIALITY, World, actor, classes, consent, ids, ref


def _task(world: World, tid: str, **extra: Any) -> None:
    body = {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
            "for": ref("Patient/anna"), **extra}
    assert world.admin.put(f"/Task/{tid}", json=body).status_code == 201


def _labeled(world: World) -> None:
    for level in ("N", "R", "V"):
        _task(world, f"anna-{level.lower()}", meta={"security": [{"system": CONFIDENTIALITY, "code": level}]})


def _label(level: str) -> list[dict[str, str]]:
    return [{"system": CONFIDENTIALITY, "code": level}]


def test_a_deny_label_withholds_that_level_and_above(world: World) -> None:
    _labeled(world)
    world.consent(consent({"type": "deny", "securityLabel": _label("R")}))
    assert ids(world.paul.get("/Task", params={"patient": "anna"}).json()) == {"anna-task", "anna-n"}
    assert world.paul.get("/Task/anna-v").status_code == 403
    history = {e["resource"]["id"] for e in world.paul.get("/Task/_history").json()["entry"]}
    assert {"anna-n", "anna-task"} <= history and not history & {"anna-r", "anna-v"}
    # Relabelled as normal, the Task is visible again at once.
    task = world.anna.get("/Task/anna-r").json()
    task["meta"] = {"security": _label("N")}
    assert world.anna.put("/Task/anna-r", json=task).status_code == 200
    assert world.paul.get("/Task/anna-r").status_code == 200
    assert world.paul.get("/Task/anna-r/_history/1").status_code == 403


def test_a_permit_label_reaches_up_to_that_level(world: World) -> None:
    _labeled(world)
    world.consent(consent({"type": "permit", "actor": [actor("Practitioner/gray")],
                           "securityLabel": _label("N")}, policy="OPTIN"))
    assert ids(world.gray.get("/Task", params={"patient": "anna"}).json()) == {"anna-task", "anna-n"}
    assert world.gray.get("/Task/anna-r").status_code == 403
    assert ids(world.chen.get("/Task", params={"patient": "anna"}).json()) == set()


def test_a_code_found_in_the_resource(world: World) -> None:
    _task(world, "anna-other")
    world.consent(consent({"type": "deny", "code": [{"coding": [
        {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}]}))
    assert ids(world.paul.get("/Task", params={"patient": "anna"}).json()) == {"anna-other"}


def test_data_instance_and_dependents(world: World) -> None:
    _task(world, "anna-sub", partOf=[ref("Task/anna-task")])
    deny = consent({"type": "deny", "data": [{"meaning": "instance", "reference": ref("Task/anna-task")}]})
    cid = world.consent(deny)
    assert ids(world.gray.get("/Task", params={"patient": "anna"}).json()) == {"anna-sub"}
    assert world.anna.delete(f"/Consent/{cid}").status_code == 200
    world.consent(consent({"type": "deny", "data": [{"meaning": "dependents", "reference": ref("Task/anna-task")}]}))
    assert ids(world.gray.get("/Task", params={"patient": "anna"}).json()) == set()
    assert world.gray.get("/Appointment/anna-visit").status_code == 200


def test_data_related_covers_what_the_resource_refers_to(world: World) -> None:
    _task(world, "anna-sub", partOf=[ref("Task/anna-task")])
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")],
                           "data": [{"meaning": "related", "reference": ref("Task/anna-sub")}]}))
    assert ids(world.paul.get("/Task", params={"patient": "anna"}).json()) == set()
    assert world.paul.get("/Patient/anna").status_code == 403  # the Task's `for`
    assert world.paul.get("/CarePlan/anna-plan").status_code == 200


def test_data_authored_by_someone(world: World) -> None:
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")],
                           "data": [{"meaning": "authoredby", "reference": ref("Practitioner/gray")}]}))
    assert world.paul.get("/Task/anna-task").status_code == 403  # requested by Dr. Gray
    assert world.paul.get("/Communication/anna-message").status_code == 403  # sent by him
    assert world.paul.get("/Appointment/anna-visit").status_code == 200


def test_data_period(world: World) -> None:
    later = {"resourceType": "Communication", "id": "anna-later", "status": "completed",
             "subject": ref("Patient/anna"), "sent": "2026-11-15T09:00:00Z"}
    assert world.admin.put("/Communication/anna-later", json=later).status_code == 201
    world.consent(consent({"type": "deny", "class": classes("Communication"),
                           "dataPeriod": {"start": "2026-10-01", "end": "2026-10-31"}}))
    assert ids(world.gray.get("/Communication").json()) == {"anna-later"}


def _action(code: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": code}]}


def test_a_consent_governs_writes_only_where_a_provision_names_collect_or_correct(world: World) -> None:
    # Opt-in, Chen may access: what she may change is left to her scopes (docs/consent.md).
    world.consent(consent({"type": "permit", "actor": [actor("Practitioner/chen")],
                           "action": [_action("access")]}, policy="OPTIN"))
    task = world.chen.get("/Task/anna-task").json()
    assert world.chen.put("/Task/anna-task", json={**task, "status": "accepted"}).status_code == 200
    new = {"resourceType": "Task", "status": "requested", "intent": "order", "for": ref("Patient/anna")}
    assert world.chen.post("/Task", json=new).status_code == 201
    # A provision naming `correct` and `collect` for Chen refuses her changes and additions.
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/chen")],
                           "action": [_action("correct"), _action("collect")]}))
    task = world.chen.get("/Task/anna-task").json()
    assert world.chen.put("/Task/anna-task", json={**task, "status": "cancelled"}).status_code == 403
    assert world.chen.post("/Task", json=new).status_code == 403
    assert world.chen.delete("/Task/anna-task").status_code == 403
    assert world.chen.get("/Task/anna-task").json()["status"] == "accepted"
    # Gray is not named: he still may.
    assert world.gray.post("/Task", json=new).status_code == 201
