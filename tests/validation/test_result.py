"""raise_for_errors: 400 for structure, 422 for terminology and profiles, all issues carried."""

from __future__ import annotations

import pytest

from fhir_server.errors import InvalidResource, Issue, StructureInvalid
from fhir_server.validation import ValidationResult, Validator
from tests.validation.helpers import task


def test_structural_errors_raise_400_with_every_issue(validator: Validator) -> None:
    result = validator.validate(task(status="bogus", foo=1))
    with pytest.raises(StructureInvalid) as caught:
        result.raise_for_errors()
    assert caught.value.status == 400
    assert {i.code for i in caught.value.all_issues()} == {"structure", "code-invalid"}
    outcome = caught.value.to_outcome()
    assert {tuple(i["expression"]) for i in outcome["issue"]} == {("Task.foo",), ("Task.status",)}


def test_terminology_errors_raise_422(validator: Validator) -> None:
    result = validator.validate(task(status="bogus"))
    with pytest.raises(InvalidResource) as caught:
        result.raise_for_errors()
    assert caught.value.status == 422
    assert [i.expression for i in caught.value.all_issues()] == [("Task.status",)]


def test_warnings_alone_do_not_raise() -> None:
    warning = Issue("warning", "not-supported", "Profile x is unknown", ("Task.meta.profile[0]",))
    result = ValidationResult([warning])
    result.raise_for_errors()
    assert result.valid
    assert result.warnings == [warning]
    assert result.errors == []
