"""Care gaps over the real HTTP API and database: an overdue CarePlan activity gets one
DetectedIssue and one care-gap Task per occurrence, no more however often it is looked at,
and both close when something shows the activity done."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from fhir_server.operations.gaps import CLOSED, NOT_APPLICABLE, OPEN
from tests.conftest import RunningServer
from tests.subscriptions.conftest import wait_until
from tests.workflows.caregaps_fixtures import (
    A1C,
    activity,
    care_plan,
    create,
    gap_settings,
    gap_state,
    identifiers,
    patient_and_team,
    records,
    when,
)
from tests.workflows.toy import fast_settings, unique
from workflows.builtin import BUILTIN
from workflows.caregaps import CareGaps, care_gaps

Doc = dict[str, Any]


def _scans(mongo: MongoClient[Doc], database: str) -> int:
    return mongo[database]["timers"].count_documents({"_id": {"$regex": "^care-gaps/scan/"}, "status": "done"})


def test_an_overdue_activity_is_one_gap_across_scans_and_closes_when_done(
        mongodb_uri: str, tmp_path: Path, mongo: MongoClient[Doc]) -> None:
    settings = gap_settings(mongodb_uri, tmp_path)
    workflows = care_gaps()
    with RunningServer(settings, workflows=workflows), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        patient, _, team = patient_and_team(api)
        plan = create(api, care_plan(patient, team, activity({"scheduledPeriod": {
            "start": when(-timedelta(days=30)), "end": when(-timedelta(days=1))}})))
        ref = f"CarePlan/{plan['id']}"
        wait_until(lambda: len(records(api, "Task", ref)) == 1, what="the care-gap Task")
        issues = records(api, "DetectedIssue", ref)
        assert len(issues) == 1
        issue = issues[0]
        assert issue["code"]["coding"][0] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                              "code": "CAREGAP", "display": "Care Gaps"}
        assert issue["implicated"] == [{"reference": ref}]
        assert issue["patient"] == {"reference": patient}
        assert gap_state(issue) == OPEN
        task = records(api, "Task", ref)[0]
        assert task["status"] == "requested"
        assert task["owner"] == {"reference": team}
        assert task["for"] == {"reference": patient}
        assert task["focus"] == {"reference": f"DetectedIssue/{issue['id']}"}
        assert identifiers([task]) == identifiers([issue])
        # Scans come every second: three more pass, and still one of each.
        scanned = _scans(mongo, settings.database)
        wait_until(lambda: _scans(mongo, settings.database) >= scanned + 3, timeout=30, what="three scans")
        assert len(records(api, "DetectedIssue", ref)) == 1
        assert len(records(api, "Task", ref)) == 1
        # The activity is done: both close.
        plan["activity"][0]["detail"]["status"] = "completed"
        assert api.put(f"/CarePlan/{plan['id']}", json=plan).status_code == 200
        wait_until(lambda: records(api, "Task", ref)[0]["status"] == "completed", what="the Task closed")
        closed = records(api, "DetectedIssue", ref)
        assert [gap_state(i) for i in closed] == [CLOSED]
        assert closed[0]["id"] == issue["id"]
        assert len(records(api, "Task", ref)) == 1


def test_an_observation_based_on_the_plan_closes_the_gap(mongodb_uri: str, tmp_path: Path) -> None:
    settings = gap_settings(mongodb_uri, tmp_path, scan_every="PT1H")  # no scan: the event closes it
    with RunningServer(settings, workflows=care_gaps()), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        patient, _, team = patient_and_team(api)
        plan = create(api, care_plan(patient, team, activity(
            {"scheduledTiming": {"event": [when(-timedelta(days=3))]}}, code=A1C)))
        ref = f"CarePlan/{plan['id']}"
        wait_until(lambda: len(records(api, "Task", ref)) == 1, what="the care-gap Task")
        # An Observation of another code shows nothing; one of the activity's code closes it.
        other = {"system": "http://loinc.org", "code": "2345-7"}
        for code in (other, A1C):
            create(api, {"resourceType": "Observation", "status": "final", "code": {"coding": [code]},
                         "subject": {"reference": patient}, "basedOn": [{"reference": ref}],
                         "effectiveDateTime": when(-timedelta(days=1))})
        wait_until(lambda: records(api, "Task", ref)[0]["status"] == "completed", what="the Task closed")
        issue = records(api, "DetectedIssue", ref)[0]
        assert gap_state(issue) == CLOSED
        assert any(d["reference"].startswith("Observation/") for e in issue["evidence"] for d in e["detail"])


def test_a_gap_falls_due_later_and_is_found_by_its_timer(mongodb_uri: str, tmp_path: Path) -> None:
    settings = gap_settings(mongodb_uri, tmp_path, scan_every="PT1H")
    with RunningServer(settings, workflows=care_gaps()), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        patient, _, team = patient_and_team(api)
        plan = create(api, care_plan(patient, team, activity({"scheduledPeriod": {"end": when(timedelta(seconds=3))}})))
        ref = f"CarePlan/{plan['id']}"
        wait_until(lambda: len(records(api, "Task", ref)) == 1, timeout=30, what="the gap once due")
        assert [gap_state(i) for i in records(api, "DetectedIssue", ref)] == [OPEN]


def test_each_occurrence_is_its_own_gap(mongodb_uri: str, tmp_path: Path) -> None:
    settings = gap_settings(mongodb_uri, tmp_path)
    with RunningServer(settings, workflows=care_gaps()), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        patient, _, team = patient_and_team(api)
        plan = create(api, care_plan(patient, team, activity({"scheduledTiming": {"repeat": {
            "boundsPeriod": {"start": when(-timedelta(days=21)), "end": when(timedelta(days=7))},
            "period": 1, "periodUnit": "wk"}}})))
        ref = f"CarePlan/{plan['id']}"
        wait_until(lambda: len(records(api, "Task", ref)) == 3, what="three weekly gaps")
        values = identifiers(records(api, "DetectedIssue", ref))
        assert len(set(values)) == 3 and all(v.startswith(f"{ref}/activity/0/") for v in values)
        assert identifiers(records(api, "Task", ref)) == values
        # The plan is revoked: its open gaps no longer apply.
        plan["status"] = "revoked"
        assert api.put(f"/CarePlan/{plan['id']}", json=plan).status_code == 200
        wait_until(lambda: all(t["status"] == "cancelled" for t in records(api, "Task", ref)), what="cancelled")
        assert {gap_state(i) for i in records(api, "DetectedIssue", ref)} == {NOT_APPLICABLE}


def test_care_gaps_ships_as_a_builtin_workflow() -> None:
    assert "workflows.caregaps:care_gaps" in BUILTIN
    made = care_gaps()
    assert isinstance(made[0], CareGaps) and made[0].criteria == "CarePlan"
    assert [w.name for w in made[1:]] == ["care-gaps-task", "care-gaps-observation", "care-gaps-encounter",
                                          "care-gaps-appointment", "care-gaps-questionnaireresponse"]


def test_a_plan_without_a_care_team_assigns_the_task_as_the_definitions_say(
        mongodb_uri: str, tmp_path: Path) -> None:
    definitions = tmp_path / "workflows.yaml"
    definitions.write_text("defaults:\n  care-gaps:\n    scanEvery: PT1H\norganizations:\n"
                           "  Organization/north:\n    care-gaps:\n      assignTo: [PractitionerRole/north-nurse]\n")
    settings = fast_settings(mongodb_uri, unique("fhir_gaps_"), builtin=False, definitions=definitions)
    with RunningServer(settings, workflows=care_gaps()), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        patient, _, _ = patient_and_team(api)
        overdue = activity({"scheduledPeriod": {"end": when(-timedelta(days=1))}})
        plans = []
        for author in ("Organization/north", "Organization/south"):
            plan = care_plan(patient, "CareTeam/none", overdue)
            del plan["careTeam"]
            plan["author"] = {"reference": author}
            plans.append(f"CarePlan/{create(api, plan)['id']}")
        wait_until(lambda: all(len(records(api, "Task", p)) == 1 for p in plans), what="both Tasks")
        north, south = (records(api, "Task", p)[0] for p in plans)
        assert north["owner"] == {"reference": "PractitionerRole/north-nurse"}
        assert "owner" not in south  # nobody named: the Task waits unassigned, for any coordinator
