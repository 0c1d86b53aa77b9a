"""Small builders shared by the validation tests."""

from __future__ import annotations

from typing import Any

from fhir_server.validation import ValidationResult


def found(result: ValidationResult) -> set[tuple[str, str]]:
    """(issue code, first expression) of every error."""
    return {(i.code, i.expression[0] if i.expression else "") for i in result.errors}


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


def task(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **elements}
