"""What the care-gap tests share: a server's settings with a fast scan, a patient with a care
team, CarePlans with activities due, and counting the engine's records by identifier."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fhir_server.config import Settings
from fhir_server.operations.gaps import CARE_GAP_SYSTEM, GAP_STATUS_URL
from tests.workflows.toy import fast_settings, unique
from workflows.caregaps import CareGaps, care_gaps
from workflows.effects import Effects
from workflows.engine import Workflow

Doc = dict[str, Any]
LOINC = "http://loinc.org"
A1C = {"system": LOINC, "code": "4548-4", "display": "Hemoglobin A1c"}


def definitions_file(folder: Path, scan_every: str = "PT1S") -> Path:
    path = folder / f"workflows-{unique()}.yaml"
    path.write_text(f"defaults:\n  care-gaps:\n    scanEvery: {scan_every}\norganizations: {{}}\n")
    return path


def gap_settings(mongodb_uri: str, folder: Path, scan_every: str = "PT1S") -> Settings:
    return fast_settings(mongodb_uri, unique("fhir_gaps_"), builtin=False,
                         definitions=definitions_file(folder, scan_every))


def when(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def patient_and_team(api: httpx.Client) -> tuple[str, str, str]:
    """A patient, their practitioner and their CareTeam: (Patient/x, Practitioner/y, CareTeam/z)."""
    org = api.post("/Organization", json={"resourceType": "Organization", "name": "North clinic"}).json()["id"]
    practitioner = api.post("/Practitioner", json={"resourceType": "Practitioner",
                                                   "name": [{"family": "Gap"}]}).json()["id"]
    patient = api.post("/Patient", json={
        "resourceType": "Patient", "name": [{"family": unique("p")}],
        "generalPractitioner": [{"reference": f"Practitioner/{practitioner}"}],
        "managingOrganization": {"reference": f"Organization/{org}"}}).json()["id"]
    team = api.post("/CareTeam", json={
        "resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{patient}"},
        "participant": [{"member": {"reference": f"Practitioner/{practitioner}"}}]}).json()["id"]
    return f"Patient/{patient}", f"Practitioner/{practitioner}", f"CareTeam/{team}"


def activity(scheduled: Doc, status: str = "scheduled", code: Doc | None = None) -> Doc:
    detail: Doc = {"status": status, "description": "HbA1c test", **scheduled}
    if code is not None:
        detail["code"] = {"coding": [code]}
    return {"detail": detail}


def care_plan(patient: str, team: str, *activities: Doc) -> Doc:
    return {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": patient}, "careTeam": [{"reference": team}],
            "activity": list(activities)}


def create(api: httpx.Client, resource: Doc) -> Doc:
    response = api.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: Doc = response.json()
    return created


def records(api: httpx.Client, rtype: str, plan: str) -> list[Doc]:
    """The engine's care-gap records of `rtype` about `plan` (found by their identifier)."""
    param = "implicated" if rtype == "DetectedIssue" else "based-on"
    bundle = api.get(f"/{rtype}", params={param: plan, "identifier": f"{CARE_GAP_SYSTEM}|",
                                          "_count": "200"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def gap_state(issue: Doc) -> str:
    extension = next(e for e in issue["modifierExtension"] if e["url"] == GAP_STATUS_URL)
    code: str = extension["valueCodeableConcept"]["coding"][0]["code"]
    return code


def identifiers(found: list[Doc]) -> list[str]:
    return sorted(i["value"] for r in found for i in r["identifier"] if i["system"] == CARE_GAP_SYSTEM)


class KilledBetweenEffects(CareGaps):
    """Dies (SIGKILL) after the DetectedIssue of a gap is committed and before its Task is."""

    def __init__(self) -> None:
        super().__init__()
        reconciler = self.reconciler
        task = reconciler.task

        def dying(effects: Effects, plan: Doc, gap: Any, issue_id: str) -> Doc:
            os.kill(os.getpid(), signal.SIGKILL)
            return task(effects, plan, gap, issue_id)

        reconciler.task = dying  # type: ignore[method-assign]


class KilledBeforeEffects(CareGaps):
    """Dies (SIGKILL) with the triggering CarePlan committed and delivered, before any effect."""

    async def on_event(self, event: Any, effects: Effects) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def killed_between_effects() -> list[Workflow]:
    """FHIR_WORKFLOW_MODULES=tests.workflows.caregaps_fixtures:killed_between_effects."""
    return [KilledBetweenEffects()]


def killed_before_effects() -> list[Workflow]:
    return [KilledBeforeEffects()]


__all__ = ["care_gaps"]
