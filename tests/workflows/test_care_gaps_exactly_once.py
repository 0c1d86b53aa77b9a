"""Care-gap effects exactly once, counted by their identifiers: a real `fhir-server serve`
process SIGKILLed between the triggering CarePlan write and its effects (before any, and
between the DetectedIssue and the Task) then restarted; two real server processes sharing one
database, both scanning every second, one SIGKILLed midway; 16 reconciliations of one plan at
the same moment from two sets of services."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.context import RequestContext
from fhir_server.services import build_services
from tests.conftest import free_port
from tests.processes import ServerProcess
from tests.subscriptions.conftest import wait_until
from tests.workflows.caregaps_fixtures import (
    activity,
    care_plan,
    create,
    definitions_file,
    gap_settings,
    gap_state,
    identifiers,
    patient_and_team,
    records,
    when,
)
from tests.workflows.toy import unique
from workflows.caregaps import CareGaps, care_gaps

Doc = dict[str, Any]
OVERDUE = {"scheduledTiming": {"event": [when(-timedelta(days=9)), when(-timedelta(days=2))]}}


def _fast_env(monkeypatch: pytest.MonkeyPatch, definitions: Path) -> None:
    monkeypatch.setenv("FHIR_WORKFLOW_DEFINITIONS", str(definitions))
    monkeypatch.setenv("FHIR_WORKFLOW_TIMER_POLL", "0.1")
    monkeypatch.setenv("FHIR_WORKFLOW_TIMER_LEASE", "2")


def _exactly_one_each(api: httpx.Client, plan: str, occurrences: int) -> None:
    issues, tasks = records(api, "DetectedIssue", plan), records(api, "Task", plan)
    assert len(issues) == occurrences, identifiers(issues)
    assert identifiers(tasks) == identifiers(issues)  # one Task per DetectedIssue, same identifier
    assert len(set(identifiers(issues))) == occurrences
    assert {t["focus"]["reference"] for t in tasks} == {f"DetectedIssue/{i['id']}" for i in issues}


@pytest.mark.parametrize("module", ["killed_before_effects", "killed_between_effects"])
def test_sigkill_between_the_trigger_and_its_effects_doubles_nothing(
        mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str,
        mongo: MongoClient[Doc]) -> None:
    database = unique("fhir_gaps_kill_")
    _fast_env(monkeypatch, definitions_file(tmp_path, "PT1H"))
    monkeypatch.setenv("FHIR_WORKFLOW_BUILTIN", "0")
    monkeypatch.setenv("FHIR_WORKFLOW_MODULES", f"tests.workflows.caregaps_fixtures:{module}")
    dying = ServerProcess(mongodb_uri, database, free_port())
    try:
        with httpx.Client(base_url=dying.base_url, timeout=30) as api:
            patient, _, team = patient_and_team(api)
            try:
                plan = api.post("/CarePlan", json=care_plan(patient, team, activity(OVERDUE)))
                assert plan.status_code == 201
            except httpx.HTTPError:
                pass  # killed before it answered: the CarePlan is committed all the same
        dying.process.wait(30)
        assert dying.process.returncode == -signal.SIGKILL
    finally:
        dying.stop()
    # What the dead process left: the trigger, and the DetectedIssue when it died after it.
    left = mongo[database]
    assert left["CarePlan"].count_documents({}) == 1
    assert left["DetectedIssue"].count_documents({}) == (1 if module == "killed_between_effects" else 0)
    assert left["Task"].count_documents({}) == 0
    # Restarted with the shipped workflows (FHIR_WORKFLOW_BUILTIN on, no modules).
    monkeypatch.delenv("FHIR_WORKFLOW_MODULES")
    monkeypatch.setenv("FHIR_WORKFLOW_BUILTIN", "1")
    restarted = ServerProcess(mongodb_uri, database, free_port())
    try:
        with httpx.Client(base_url=restarted.base_url, timeout=30) as api:
            [entry] = api.get("/CarePlan").json()["entry"]
            ref = f"CarePlan/{entry['resource']['id']}"
            wait_until(lambda: len(records(api, "Task", ref)) == 2, timeout=60, what="the effects after restart")
            _exactly_one_each(api, ref, 2)
    finally:
        restarted.stop()


def test_two_server_processes_on_one_database_make_each_gap_once(
        mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo: MongoClient[Doc]) -> None:
    database = unique("fhir_gaps_two_")
    _fast_env(monkeypatch, definitions_file(tmp_path, "PT1S"))  # both scan every second
    monkeypatch.setenv("FHIR_WORKFLOW_BUILTIN", "1")
    first = ServerProcess(mongodb_uri, database, free_port())
    second = ServerProcess(mongodb_uri, database, free_port())
    try:
        with httpx.Client(base_url=first.base_url, timeout=30) as a, \
                httpx.Client(base_url=second.base_url, timeout=30) as b:
            patient, _, team = patient_and_team(a)
            plans = [create(api, care_plan(patient, team, activity(OVERDUE))) for api in (a, b) * 4]
            refs = [f"CarePlan/{p['id']}" for p in plans]
            wait_until(lambda: all(len(records(b, "Task", r)) == 2 for r in refs), timeout=60, what="all gaps")
            done = _scans_done(mongo, database)  # both processes keep scanning meanwhile
            wait_until(lambda: _scans_done(mongo, database) >= done + 3, timeout=60, what="three more scans")
            for ref in refs:
                _exactly_one_each(a, ref, 2)
            # One process dies; the other closes the gaps of the plans completed through it.
            first.kill()
            for plan in plans[:4]:
                plan["activity"][0]["detail"]["status"] = "completed"
                assert b.put(f"/CarePlan/{plan['id']}", json=plan).status_code == 200
            wait_until(lambda: all(t["status"] == "completed" for r in refs[:4] for t in records(b, "Task", r)),
                       timeout=60, what="the completed plans' gaps closed")
            for ref in refs:
                _exactly_one_each(b, ref, 2)
            assert {gap_state(i) for r in refs[:4] for i in records(b, "DetectedIssue", r)} == {"closed-gap"}
            assert {gap_state(i) for r in refs[4:] for i in records(b, "DetectedIssue", r)} == {"open-gap"}
    finally:
        first.stop()
        second.stop()


def _scans_done(mongo: MongoClient[Doc], database: str) -> int:
    """Scans fired so far, as the engine's timers record them."""
    return mongo[database]["timers"].count_documents({"_id": {"$regex": "^care-gaps/scan/"}, "status": "done"})


def test_sixteen_reconciliations_at_once_make_one_record_each(mongodb_uri: str, tmp_path: Path) -> None:
    settings = gap_settings(mongodb_uri, tmp_path, scan_every="PT1H")

    async def scenario() -> tuple[list[str], list[str]]:
        one = await build_services(settings)
        two = await build_services(settings)
        try:
            context = RequestContext.system(settings.base_url, "create")
            plan = (await one.repository.create(context, care_plan("Patient/x", "CareTeam/y", activity(OVERDUE),
                                                                   activity(OVERDUE)))).stored
            workflows = [CareGaps(), CareGaps()]
            engines = [one.workflows, two.workflows]
            assert all(e is not None for e in engines)
            for workflow, engine in zip(workflows, engines, strict=True):
                workflow.definitions = engine.definitions  # type: ignore[union-attr]
            jobs = []
            for i in range(16):
                engine, workflow = engines[i % 2], workflows[i % 2]
                effects = engine.effects(workflow.name, f"race/{i}")  # type: ignore[union-attr]
                jobs.append(workflow.reconciler.plan(effects, plan.id))
            await asyncio.gather(*jobs)
            search = one.search
            found = []
            for rtype, param in (("DetectedIssue", "implicated"), ("Task", "based-on")):
                query = search.parse(rtype, [(param, f"CarePlan/{plan.id}"), ("_count", "100")])
                page = await one.repository.search(RequestContext.system(settings.base_url, "search-type"), query)
                found.append(identifiers([e.resource for e in page.entries]))
            return found[0], found[1]
        finally:
            await one.close()
            await two.close()

    issues, tasks = asyncio.run(scenario())
    assert len(issues) == 4 and len(set(issues)) == 4  # two activities × two occurrences
    assert tasks == issues


__all__ = ["care_gaps"]
