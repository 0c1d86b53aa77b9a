"""meta.profile: the coordination-task profile, unknown profiles, and the differential rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.config import DEFAULT_PROFILES_DIR
from fhir_server.errors import InvalidResource
from fhir_server.validation import Validator
from tests.validation.helpers import found, patient

COORDINATION_TASK = "http://fhir.care-coord.example/StructureDefinition/coordination-task"
TASK_CODES = "http://fhir.care-coord.example/CodeSystem/coordination-task-code"


def hand_off(**changes: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Task",
        "meta": {"profile": [COORDINATION_TASK]},
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": "referral"}]},
        "for": {"reference": "Patient/p1"},
        "requester": {"reference": "PractitionerRole/pr1"},
        "owner": {"reference": "Practitioner/dr2"},
        "authoredOn": "2026-11-21T09:30:00Z",
    }
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def test_the_published_profile_is_valid_r4(validator: Validator) -> None:
    for name in ("StructureDefinition-coordination-task.json",
                 "ValueSet-coordination-task-code.json", "CodeSystem-coordination-task-code.json"):
        definition = json.loads((DEFAULT_PROFILES_DIR / name).read_text(encoding="utf-8"))
        assert validator.validate(definition).issues == [], name
    assert COORDINATION_TASK in validator.profiles.profiles


def test_a_conforming_hand_off_passes(validator: Validator) -> None:
    assert validator.validate(hand_off()).issues == []
    versioned = hand_off(meta={"profile": [COORDINATION_TASK + "|1.0.0"]})
    assert validator.validate(versioned).issues == []
    absolute = hand_off(**{"for": {"reference": "https://ehr.example/fhir/Patient/9/_history/2"}})
    assert validator.validate(absolute).issues == []


def test_a_non_conforming_hand_off_fails_with_422(validator: Validator) -> None:
    resource = hand_off(
        intent="plan", owner=None, authoredOn=None,
        code={"coding": [{"system": TASK_CODES, "code": "gossip"}]},
        requester={"reference": "Patient/p1"},
        **{"for": {"reference": "Group/g1"}},
    )
    result = validator.validate(resource)
    assert found(result) == {
        ("value", "Task.intent"),
        ("required", "Task.owner"),
        ("required", "Task.authoredOn"),
        ("code-invalid", "Task.code"),
        ("structure", "Task.requester"),
        ("structure", "Task.for"),
    }
    assert all(COORDINATION_TASK in i.diagnostics for i in result.errors)
    with pytest.raises(InvalidResource) as caught:
        result.raise_for_errors()
    assert len(caught.value.all_issues()) == 6


def test_code_must_come_from_the_profile_value_set(validator: Validator) -> None:
    other = hand_off(code={"text": "call the patient"})
    assert found(validator.validate(other)) == {("code-invalid", "Task.code")}
    missing = hand_off(code=None)
    assert found(validator.validate(missing)) == {("required", "Task.code")}


def test_unknown_profiles_are_accepted_with_a_warning(validator: Validator) -> None:
    for reference in ("http://example.org/StructureDefinition/other", COORDINATION_TASK + "|9.9"):
        result = validator.validate(patient(meta={"profile": [reference]}))
        assert result.errors == []
        [warning] = result.warnings
        assert (warning.severity, warning.code) == ("warning", "not-supported")
        assert warning.expression == ("Patient.meta.profile[0]",)
        assert reference in warning.diagnostics
        result.raise_for_errors()


def test_a_profile_for_another_type(validator: Validator) -> None:
    result = validator.validate(patient(meta={"profile": [COORDINATION_TASK]}))
    assert found(result) == {("processing", "Patient")}


def test_contained_resources_are_checked_against_their_profiles(validator: Validator) -> None:
    contained = hand_off(id="t1", owner=None)
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/p1"}, "contained": [contained],
            "activity": [{"reference": {"reference": "#t1"}}]}
    assert found(validator.validate(plan)) == {("required", "CarePlan.contained[0].owner")}


def _write(folder: Path, name: str, resource: dict[str, Any]) -> None:
    (folder / name).write_text(json.dumps(resource), encoding="utf-8")


def _profile(url: str, elements: list[dict[str, Any]], base: str = "") -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition", "url": url, "name": "P", "status": "draft",
        "kind": "resource", "abstract": False, "type": "Patient", "derivation": "constraint",
        "baseDefinition": base or "http://hl7.org/fhir/StructureDefinition/Patient",
        "differential": {"element": [{"id": "Patient", "path": "Patient"}, *elements]},
    }


def test_differential_rules(tmp_path: Path) -> None:
    base = _profile("http://example.org/base", [
        {"id": "Patient.name", "path": "Patient.name", "min": 1, "max": "1"},
    ])
    child = _profile("http://example.org/child", [
        {"id": "Patient.maritalStatus", "path": "Patient.maritalStatus", "patternCodeableConcept":
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                         "code": "M"}]}},
        {"id": "Patient.deceased[x]", "path": "Patient.deceased[x]",
         "type": [{"code": "boolean"}]},
        {"id": "Patient.name.family", "path": "Patient.name.family", "min": 1},
        {"id": "Patient.telecom.system", "path": "Patient.telecom.system", "fixedCode": "phone"},
        {"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn",
         "min": 1},
    ], base="http://example.org/base")
    _write(tmp_path, "base.json", base)
    _write(tmp_path, "child.json", child)
    validator = Validator(tmp_path)
    meta = {"profile": ["http://example.org/child"]}
    married = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                           "code": "M", "display": "Married"}], "text": "married"}
    good = patient(meta=meta, name=[{"family": "F"}], maritalStatus=married,
                   deceasedBoolean=False, telecom=[{"system": "phone", "value": "1"}])
    assert validator.validate(good).issues == []
    bad = patient(meta=meta, name=[{"given": ["G"]}, {"family": "F"}],
                  maritalStatus={"text": "married"}, deceasedDateTime="2020-01-01",
                  telecom=[{"system": "phone", "value": "1"}, {"system": "email", "value": "e"}])
    assert found(validator.validate(bad)) == {
        ("structure", "Patient.name"),  # max 1, from the base profile
        ("required", "Patient.name[0].family"),
        ("value", "Patient.maritalStatus"),
        ("structure", "Patient.deceasedDateTime"),
        ("value", "Patient.telecom[1].system"),
    }


def test_value_sets_in_the_profiles_folder_may_include_core_ones(tmp_path: Path) -> None:
    _write(tmp_path, "vs.json", {
        "resourceType": "ValueSet", "url": "http://example.org/vs", "status": "draft",
        "compose": {"include": [{"valueSet": ["http://hl7.org/fhir/ValueSet/administrative-gender"]}],
                    "exclude": [{"system": "http://hl7.org/fhir/administrative-gender",
                                 "concept": [{"code": "unknown"}]}]},
    })
    _write(tmp_path, "p.json", _profile("http://example.org/p", [
        {"id": "Patient.gender", "path": "Patient.gender",
         "binding": {"strength": "required", "valueSet": "http://example.org/vs"}},
    ]))
    validator = Validator(tmp_path)
    meta = {"profile": ["http://example.org/p"]}
    assert validator.validate(patient(meta=meta, gender="other")).issues == []
    assert found(validator.validate(patient(meta=meta, gender="unknown"))) == {
        ("code-invalid", "Patient.gender")}


def test_an_invalid_profile_stops_start_up(tmp_path: Path) -> None:
    broken = _profile("http://example.org/broken", [])
    del broken["status"]
    _write(tmp_path, "broken.json", broken)
    with pytest.raises(ValueError, match=r"broken\.json"):
        Validator(tmp_path)
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        Validator(tmp_path)


def test_a_missing_profiles_folder_means_no_profiles(tmp_path: Path) -> None:
    assert Validator(tmp_path / "absent").profiles.profiles == {}
