"""Structural checks and required bindings, with their FHIRPath locations."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.validation import Validator
from fhir_server.validation.walker import MAX_DEPTH
from tests.validation.helpers import found, patient, task


def test_minimal_resources_are_valid(validator: Validator) -> None:
    assert validator.validate(patient()).issues == []
    assert validator.validate(task()).issues == []


def test_unknown_elements(validator: Validator) -> None:
    result = validator.validate(patient(foo=1, name=[{"family": "X", "nickname": "Y"}]))
    assert found(result) == {("structure", "Patient.foo"), ("structure", "Patient.name[0].nickname")}
    assert result.structural


def test_wrong_json_types(validator: Validator) -> None:
    result = validator.validate(patient(active="true", name={"family": "X"}, gender=["male"]))
    assert found(result) == {
        ("structure", "Patient.active"),
        ("structure", "Patient.name"),
        ("structure", "Patient.gender"),
    }
    result = validator.validate(task(**{"for": [{"reference": "Patient/1"}]}, note=["text"]))
    assert found(result) == {("structure", "Task.for"), ("structure", "Task.note[0]")}


@pytest.mark.parametrize("value", ["2020-13-01", "2021-02-29", "20200101", "2020-1-1", "2020-01-01T10:00"])
def test_bad_dates(validator: Validator, value: str) -> None:
    result = validator.validate(patient(birthDate=value[:10] if "T" not in value else value))
    expression = "Patient.birthDate"
    if "T" in value:  # a time without a zone is not a date either
        result = validator.validate(task(authoredOn=value))
        expression = "Task.authoredOn"
    assert found(result) == {("value", expression)}


@pytest.mark.parametrize("value", ["2020", "2020-02", "2020-02-29"])
def test_good_dates(validator: Validator, value: str) -> None:
    assert validator.validate(patient(birthDate=value)).issues == []
    assert validator.validate(task(authoredOn=value + "T23:59:60.5+14:00" if len(value) == 10
                                   else value)).issues == []


@pytest.mark.parametrize("value", ["a b", "x" * 65, "é", "a/b", "abc\n"])
def test_bad_ids(validator: Validator, value: str) -> None:
    assert found(validator.validate(patient(id=value))) == {("value", "Patient.id")}


def test_missing_task_status_and_intent(validator: Validator) -> None:
    result = validator.validate({"resourceType": "Task"})
    assert found(result) == {("required", "Task.status"), ("required", "Task.intent")}
    assert result.structural


def test_a_primitive_extension_satisfies_min_one(validator: Validator) -> None:
    absent = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    resource = {"resourceType": "Task", "_status": absent, "intent": "order"}
    assert validator.validate(resource).errors == []


def test_nested_cardinality(validator: Validator) -> None:
    resource = task(
        input=[{"type": {"text": "a"}, "valueString": "x"}, {"type": {"text": "b"}},
               {"valueInteger": 1}, {"type": {"text": "c"}, "_valueString": {"id": "v"}}],
        text={"div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
        extension=[{"valueString": "no url"}],
    )
    assert found(validator.validate(resource)) == {
        ("required", "Task.input[1].value[x]"),
        ("required", "Task.input[2].type"),
        ("required", "Task.text.status"),
        ("required", "Task.extension[0].url"),
    }


def test_invalid_task_status_is_a_terminology_error(validator: Validator) -> None:
    result = validator.validate(task(status="started", priority="whenever"))
    assert found(result) == {("code-invalid", "Task.status"), ("code-invalid", "Task.priority")}
    assert not result.structural
    assert "request-priority" in result.errors[1].diagnostics


def _condition(clinical_status: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/1"},
            "clinicalStatus": clinical_status}


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


@pytest.mark.parametrize("concept", [
    {"coding": [{"system": CLINICAL, "code": "resolved-ish"}]},
    {"coding": [{"system": "http://example.org/other", "code": "active"}]},
    {"text": "active"},
])
def test_codeable_concept_required_binding(validator: Validator, concept: dict[str, Any]) -> None:
    result = validator.validate(patient(contained=[_condition(concept)]))
    assert found(result) == {("code-invalid", "Patient.contained[0].clinicalStatus")}
    assert not result.structural


def test_codeable_concept_in_value_set(validator: Validator) -> None:
    concept = {"coding": [{"system": "http://example.org/local", "code": "x"},
                          {"system": CLINICAL, "code": "active"}]}
    assert validator.validate(patient(contained=[_condition(concept)])).issues == []


def test_control_characters(validator: Validator) -> None:
    result = validator.validate(patient(name=[{"family": "Nul\x00l", "given": ["Bell\x07"]}],
                                        gender="male\x00"))
    assert found(result) == {
        ("value", "Patient.name[0].family"),
        ("value", "Patient.name[0].given[0]"),
        ("code-invalid", "Patient.gender"),
    }
    ok = patient(name=[{"text": "tab\tcr\rlf\n 中文\u00a0nbsp\u3000"}])
    assert validator.validate(ok).issues == []


def test_empty_values(validator: Validator) -> None:
    result = validator.validate(patient(name=[{"family": ""}], telecom=[], contact=[{}],
                                        maritalStatus={}))
    assert found(result) == {
        ("structure", "Patient.name[0].family"),
        ("structure", "Patient.telecom"),
        ("structure", "Patient.contact[0]"),
        ("structure", "Patient.maritalStatus"),
    }


def test_null_values(validator: Validator) -> None:
    result = validator.validate(patient(gender=None, name=[None], _birthDate=None))
    assert found(result) == {
        ("structure", "Patient.gender"),
        ("structure", "Patient.name[0]"),
        ("structure", "Patient.birthDate"),
    }


def test_null_in_primitive_arrays(validator: Validator) -> None:
    ext = {"extension": [{"url": "http://example.org/e", "valueString": "v"}]}
    ok = patient(name=[{"given": [None, "Bob"], "_given": [ext, None]}])
    assert validator.validate(ok).issues == []
    for name in ({"given": [None, "Bob"]},  # no twin
                 {"given": [None, "Bob"], "_given": [None, ext]}):  # both null at 0
        result = validator.validate(patient(name=[name]))
        assert found(result) == {("structure", "Patient.name[0].given[0]")}, name
    result = validator.validate(patient(name=[{"given": ["Al", "Bob"], "_given": [ext]}]))
    assert found(result) == {("structure", "Patient.name[0].given")}


def test_contained_resources_are_validated_with_their_own_type(validator: Validator) -> None:
    resource = task(contained=[
        patient(id="p1", foo="bar"),
        {"resourceType": "Observation", "id": "o1", "status": "nonsense",
         "code": {"text": "x"}},
        {"resourceType": "NotAType", "id": "x"},
        {"resourceType": "Task", "id": "t1"},
        patient(id="p2", contained=[patient(id="p3")]),
    ])
    assert found(validator.validate(resource)) == {
        ("structure", "Task.contained[0].foo"),
        ("code-invalid", "Task.contained[1].status"),
        ("structure", "Task.contained[2]"),
        ("required", "Task.contained[3].status"),
        ("required", "Task.contained[3].intent"),
        ("invariant", "Task.contained[4]"),
    }


def test_bundle_entries_have_nested_locations(validator: Validator) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": patient()}, {"resource": patient(active=1)}]}
    assert found(validator.validate(bundle)) == {("structure", "Bundle.entry[1].resource.active")}


def _nested_extension(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/e", "valueString": "leaf"}
    for _ in range(depth):
        ext = {"url": "http://example.org/e", "extension": [ext]}
    return ext


def test_deep_nesting_is_reported_not_crashed(validator: Validator) -> None:
    result = validator.validate(patient(extension=[_nested_extension(500)]))
    assert [i.code for i in result.errors] == ["too-costly"]
    assert result.errors[0].expression[0].startswith("Patient.extension[0].extension[0]")
    assert result.structural


def test_reasonable_nesting_is_fine(validator: Validator) -> None:
    assert validator.validate(patient(extension=[_nested_extension(MAX_DEPTH - 2)])).issues == []


def test_resource_type(validator: Validator) -> None:
    assert found(validator.validate(patient(), resource_type="Task")) == {("invalid", "Patient")}
    assert found(validator.validate({"id": "x"})) == {("structure", "Resource")}
    assert found(validator.validate({"resourceType": "Nope"})) == {("structure", "Resource")}
    assert found(validator.validate({"resourceType": ["Patient"]})) == {("structure", "Resource")}
    assert validator.validate(task(), resource_type="Task").issues == []


def test_numbers(validator: Validator) -> None:
    schedule = {"resourceType": "Appointment", "status": "booked",
                "participant": [{"status": "accepted", "actor": {"display": "x"}}]}
    ok = {**schedule, "minutesDuration": 15, "priority": 0}
    assert validator.validate(ok).issues == []
    result = validator.validate({**schedule, "minutesDuration": 0, "priority": 1.5})
    assert found(result) == {("value", "Appointment.minutesDuration"),
                             ("value", "Appointment.priority")}
    result = validator.validate({**schedule, "minutesDuration": True, "priority": 2**31})
    assert found(result) == {("structure", "Appointment.minutesDuration"),
                             ("value", "Appointment.priority")}


def test_base64(validator: Validator) -> None:
    binary = {"resourceType": "Binary", "contentType": "text/plain"}
    assert validator.validate({**binary, "data": "aGVsbG8=\n"}).issues == []
    assert found(validator.validate({**binary, "data": "not base64!"})) == {
        ("value", "Binary.data")}
