"""The walker against the reference: jsonschema with the official R4 schema.

Where the schema can tell, both must reject the same mutation; the second table lists what
only the walker catches (the schema has no rule for it) and proves the schema lets it pass.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.validation import Validator
from fhir_server.validation.schema import schema_errors
from tests.validation.helpers import found, patient, task

BOTH_REJECT: list[tuple[dict[str, Any], tuple[str, str]]] = [
    (task(foo=1), ("structure", "Task.foo")),
    (patient(active="true"), ("structure", "Patient.active")),
    (patient(name={"family": "x"}), ("structure", "Patient.name")),
    (patient(birthDate="2020-13-01"), ("value", "Patient.birthDate")),
    (patient(id="a b"), ("value", "Patient.id")),
    (task(status="bogus"), ("code-invalid", "Task.status")),
    (patient(name=[{"family": ""}]), ("structure", "Patient.name[0].family")),
    (patient(meta={"lastUpdated": "2020-01-01T10:00:00"}), ("value", "Patient.meta.lastUpdated")),
    (patient(text={"status": "generated"}), ("required", "Patient.text.div")),
    (patient(contained=[{"resourceType": "Nope"}]), ("structure", "Patient.contained[0]")),
    (patient(gender=None), ("structure", "Patient.gender")),
]

ONLY_THE_WALKER: list[tuple[dict[str, Any], tuple[str, str]]] = [
    ({"resourceType": "Task", "intent": "order"}, ("required", "Task.status")),
    (task(input=[{"type": {"text": "t"}}]), ("required", "Task.input[0].value[x]")),
    (patient(telecom=[]), ("structure", "Patient.telecom")),
    (patient(maritalStatus={}), ("structure", "Patient.maritalStatus")),
    (patient(name=[{"family": "a\x00b"}]), ("value", "Patient.name[0].family")),
    (patient(birthDate="2021-02-29"), ("value", "Patient.birthDate")),
    (patient(multipleBirthInteger=1.5), ("value", "Patient.multipleBirthInteger")),
    (task(priority="whenever"), ("code-invalid", "Task.priority")),
]


@pytest.mark.parametrize(("resource", "expected"), BOTH_REJECT)
def test_both_reject(validator: Validator, resource: dict[str, Any],
                     expected: tuple[str, str]) -> None:
    assert schema_errors(resource)
    assert found(validator.validate(resource)) == {expected}


@pytest.mark.parametrize(("resource", "expected"), ONLY_THE_WALKER)
def test_only_the_walker_rejects(validator: Validator, resource: dict[str, Any],
                                 expected: tuple[str, str]) -> None:
    assert schema_errors(resource) == []
    assert found(validator.validate(resource)) == {expected}
