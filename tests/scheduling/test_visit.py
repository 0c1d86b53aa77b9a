"""Before and after the visit (the `visit` workflows) over HTTP: on booking, the preparation
Task and its subtasks, the parent following them; reminders at their offsets, once, by the
patient's preferred medium and language; cancelled when the visit is; post-visit Tasks on
fulfilled; a coordinator Task on a no-show."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fhir_server.config import WorkflowSettings
from tests.conftest import RunningServer, make_settings
from tests.scheduling.conftest import created, iso
from tests.subscriptions.conftest import FAST, wait_until
from workflows.scheduling import AppointmentResponses, Scheduling
from workflows.visit import VISIT_CODES, Visit, VisitPreparation

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def visit_api(mongodb_uri: str) -> Iterator[httpx.Client]:
    settings = make_settings(mongodb_uri, database=f"fhir_visit_{uuid.uuid4().hex[:8]}", subscriptions=FAST,
                             workflows=WorkflowSettings(timer_poll=0.05, builtin=False))
    flows = [Scheduling(), AppointmentResponses(), VisitPreparation(),
             Visit({"remindBefore": ["PT3S"], "coordinator": "Practitioner/coordinator"})]
    with RunningServer(settings, workflows=flows), \
            httpx.Client(base_url=settings.base_url, timeout=60) as client:
        yield client


def search(api: httpx.Client, resource_type: str, **params: str) -> list[Doc]:
    bundle = api.get(f"/{resource_type}", params={"_count": "100", **params}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def booked(api: httpx.Client, start: datetime) -> tuple[str, str, str]:
    patient = created(api, {"resourceType": "Patient", "telecom": [
        {"system": "phone", "value": "555", "rank": 2}, {"system": "email", "value": "p@example.org", "rank": 1}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}, "preferred": True}]})
    doctor = created(api, {"resourceType": "Practitioner"})
    appointment = created(api, {"resourceType": "Appointment", "status": "booked", "start": iso(start),
                                "end": iso(start + timedelta(minutes=15)), "participant": [
                                    {"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"},
                                    {"actor": {"reference": f"Practitioner/{doctor['id']}"}, "status": "accepted"}]})
    return appointment["id"], patient["id"], doctor["id"]


def code_of(task: Doc) -> str:
    return str(next(c["code"] for c in task["code"]["coding"] if c["system"] == VISIT_CODES))


def test_preparation_reminder_and_after(visit_api: httpx.Client) -> None:
    api = visit_api
    aid, patient, doctor = booked(api, datetime.now(UTC) + timedelta(seconds=6))
    tasks = wait_until(lambda: len(t := search(api, "Task", focus=f"Appointment/{aid}")) == 4 and t,
                       what="the preparation Tasks")
    by_code = {code_of(t): t for t in tasks}
    parent = by_code["visit-preparation"]
    subtasks = [by_code[c] for c in ("pre-visit-questionnaire", "telehealth-consent", "device-check")]
    assert all(t["partOf"] == [{"reference": f"Task/{parent['id']}"}] for t in subtasks)
    assert all(t["owner"] == {"reference": f"Patient/{patient}"} for t in subtasks)
    assert subtasks[0]["input"][0]["valueCanonical"].endswith("/Questionnaire/pre-visit")
    # The reminder: a request now, a Communication when it is due, once.
    requests = wait_until(lambda: search(api, "CommunicationRequest", subject=f"Patient/{patient}"),
                          what="the reminder's request")
    assert len(requests) == 1 and requests[0]["occurrenceDateTime"]
    sent = wait_until(lambda: search(api, "Communication", subject=f"Patient/{patient}"), timeout=30,
                      what="the reminder sent")
    assert len(sent) == 1
    assert sent[0]["basedOn"] == [{"reference": f"CommunicationRequest/{requests[0]['id']}"}]
    assert sent[0]["medium"][0]["coding"][0]["code"] == "EMAILWRIT" and sent[0]["language"] == "fr"
    wait_until(lambda: search(api, "CommunicationRequest", subject=f"Patient/{patient}")[0]["status"] == "completed",
               what="the request completed")
    # The parent follows its subtasks.
    for task in subtasks:
        assert api.put(f"/Task/{task['id']}", json={**task, "status": "completed"}).status_code == 200
    wait_until(lambda: api.get(f"/Task/{parent['id']}").json()["status"] == "completed", what="prepared")
    # A later version of the booked Appointment prepares nothing again.
    current = api.get(f"/Appointment/{aid}").json()
    assert api.put(f"/Appointment/{aid}", json={**current, "comment": "room 2"}).status_code == 200
    # Fulfilled: the documentation and care-plan Tasks for the practitioner.
    current = api.get(f"/Appointment/{aid}").json()
    assert api.put(f"/Appointment/{aid}", json={**current, "status": "fulfilled"}).status_code == 200
    after = wait_until(lambda: len(t := search(api, "Task", focus=f"Appointment/{aid}")) == 6 and t,
                       what="the post-visit Tasks")
    news = {code_of(t): t for t in after}
    assert news["visit-documentation"]["owner"] == {"reference": f"Practitioner/{doctor}"}
    assert news["careplan-update"]["owner"] == {"reference": f"Practitioner/{doctor}"}
    assert len(search(api, "Communication", subject=f"Patient/{patient}")) == 1


def test_cancelled_visit_sends_no_reminder_and_noshow_goes_to_the_coordinator(visit_api: httpx.Client) -> None:
    api = visit_api
    aid, patient, _ = booked(api, datetime.now(UTC) + timedelta(seconds=8))
    wait_until(lambda: search(api, "CommunicationRequest", subject=f"Patient/{patient}"), what="the request")
    cancelled = api.post(f"/Appointment/{aid}/$cancel")
    assert cancelled.status_code == 200, cancelled.text
    wait_until(lambda: search(api, "CommunicationRequest", subject=f"Patient/{patient}")[0]["status"] == "revoked",
               what="the reminder revoked")
    other, other_patient, _ = booked(api, datetime.now(UTC) + timedelta(hours=1))
    current = api.get(f"/Appointment/{other}").json()
    assert api.put(f"/Appointment/{other}", json={**current, "status": "noshow"}).status_code == 200
    follow = wait_until(lambda: [t for t in search(api, "Task", focus=f"Appointment/{other}")
                                 if code_of(t) == "noshow-follow-up"], what="the coordinator's Task")
    assert follow[0]["owner"] == {"reference": "Practitioner/coordinator"}
    # The cancelled visit's reminder was never sent (its time has come by now).
    wait_until(lambda: datetime.now(UTC) > datetime.fromisoformat(
        api.get(f"/Appointment/{aid}").json()["start"].replace("Z", "+00:00")) - timedelta(seconds=2), timeout=30)
    notices = [c for c in search(api, "Communication", subject=f"Patient/{patient}") if c.get("basedOn")]
    assert notices == []
    assert other_patient


BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
FULFILL = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}


def _referral(api: httpx.Client, patient: str, doctor: str, status: str) -> tuple[str, Doc]:
    """A ServiceRequest and its referral Task (Gravity: code fulfill, focus the request), moved
    from requested to `status` by the performer."""
    request = created(api, {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                            "subject": {"reference": f"Patient/{patient}"}})
    task = created(api, {"resourceType": "Task", "status": "requested", "intent": "order", "code": FULFILL,
                         "focus": {"reference": f"ServiceRequest/{request['id']}"},
                         "for": {"reference": f"Patient/{patient}"},
                         "requester": {"reference": "Practitioner/referrer"},
                         "owner": {"reference": f"Practitioner/{doctor}"}})
    for step in ["accepted"] + ([status] if status != "accepted" else []):
        changed = api.put(f"/Task/{task['id']}", json={**task, "status": step})
        assert changed.status_code == 200, changed.text
        task = changed.json()
    return f"ServiceRequest/{request['id']}", task


def _code(task: Doc) -> str | None:
    return next((c["code"] for c in (task.get("businessStatus") or {}).get("coding", []) if c["system"] == BSER), None)


def _versions(api: httpx.Client, task_id: str) -> int:
    return int(api.get(f"/Task/{task_id}/_history", params={"_summary": "count"}).json()["total"])


def _noshow_follow_up(api: httpx.Client, appointment: str) -> list[Doc]:
    return [t for t in search(api, "Task", focus=f"Appointment/{appointment}") if code_of(t) == "noshow-follow-up"]


def test_noshow_marks_the_referral_unattended_once(visit_api: httpx.Client) -> None:
    """A no-show: the open referral the visit is basedOn gets BSeR 5.1.2 (one update, even when
    16 clients record the no-show at once), a finished referral keeps its status, and the
    coordinator's Task points at the referral's ServiceRequest."""
    api = visit_api
    aid, patient, doctor = booked(api, datetime.now(UTC) + timedelta(hours=2))
    open_request, open_task = _referral(api, patient, doctor, "accepted")
    done_request, done_task = _referral(api, patient, doctor, "in-progress")
    done_task = api.put(f"/Task/{done_task['id']}", json={**done_task, "status": "completed", "output": [
        {"type": {"text": "consult note"}, "valueString": "seen elsewhere"}]}).json()
    assert done_task["status"] == "completed"
    before_open, before_done = _versions(api, open_task["id"]), _versions(api, done_task["id"])
    current = api.get(f"/Appointment/{aid}").json()
    current["basedOn"] = [{"reference": open_request}, {"reference": done_request}]
    current = api.put(f"/Appointment/{aid}", json=current).json()
    noshow = {**current, "status": "noshow"}
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: api.put(f"/Appointment/{aid}", json=noshow).status_code, range(16)))
    assert statuses == [200] * 16
    marked = wait_until(lambda: _code(t := api.get(f"/Task/{open_task['id']}").json()) == "5.1.2" and t,
                        what="the referral's business status")
    assert marked["businessStatus"]["coding"] == [{"system": BSER, "code": "5.1.2",
                                                   "display": "Scheduled Service Request Event Unattended"}]
    assert marked["status"] == "accepted"
    # The workflow takes its events in order: once a later no-show is handled, all 16 are.
    later, _, _ = booked(api, datetime.now(UTC) + timedelta(hours=3))
    assert api.put(f"/Appointment/{later}", json={**api.get(f"/Appointment/{later}").json(),
                                                   "status": "noshow"}).status_code == 200
    wait_until(lambda: _noshow_follow_up(api, later), what="the later no-show handled")
    assert _versions(api, open_task["id"]) == before_open + 1
    assert _versions(api, done_task["id"]) == before_done
    assert api.get(f"/Task/{done_task['id']}").json()["businessStatus"] == done_task["businessStatus"]
    [follow] = _noshow_follow_up(api, aid)
    assert follow["basedOn"] == [{"reference": open_request}, {"reference": done_request}]
    assert follow["owner"] == {"reference": "Practitioner/coordinator"}
