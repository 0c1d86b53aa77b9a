"""The specification's own examples: the server must accept every one of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.resource_types import STORED
from fhir_server.validation import Validator
from fhir_server.validation.schema import schema_errors

EXAMPLES = sorted((Path(__file__).parent.parent / "fixtures" / "examples").glob("*.json"))
# Examples that are genuinely invalid R4, and the first error they must produce.
KNOWN_INVALID = {
    # A later build's SearchParameter Bundle: targets name R5 resource types
    # (AdministrableProductDefinition, Ingredient, ...) absent from R4's resource-types.
    "search-parameters.json": ("code-invalid", "Bundle.entry[17].resource.target[2]"),
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_examples_are_there() -> None:
    assert len(EXAMPLES) == 174
    assert sum(load(p)["resourceType"] in STORED for p in EXAMPLES) >= 100


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(validator: Validator, path: Path) -> None:
    result = validator.validate(load(path))
    if path.name in KNOWN_INVALID:
        code, expression = KNOWN_INVALID[path.name]
        assert (result.errors[0].code, result.errors[0].expression[0]) == (code, expression)
        return
    assert result.errors == []
    result.raise_for_errors()


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if load(p)["resourceType"] in STORED], ids=lambda p: p.name
)
def test_stored_example_passes_the_r4_schema_too(path: Path) -> None:
    # The reference: jsonschema with the official schema agrees that the example is valid.
    assert schema_errors(load(path)) == []
