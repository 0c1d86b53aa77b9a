"""The R4 JSON schema through jsonschema (Draft6Validator): the reference the hand-written
walker is tested against (tests/validation/test_schema_agreement.py) and the baseline of
bench/validation.py. It is not on the write path: 10-250x slower than the walker, its
locations are JSON pointers, and it knows neither cardinality nor FHIR's null rules.
"""

from __future__ import annotations

import functools
from typing import Any

from jsonschema import Draft6Validator

from fhir_server.validation import structure


@functools.cache
def schema_validator(resource_type: str) -> Draft6Validator:
    """A validator for `#/definitions/<resource_type>`, compiled once (safe to share)."""
    definitions: dict[str, Any] = structure.schema()["definitions"]
    if resource_type not in definitions:
        raise KeyError(f"no R4 schema definition {resource_type}")
    schema = {"$ref": f"#/definitions/{resource_type}", "definitions": definitions}
    return Draft6Validator(schema)


def schema_errors(resource: dict[str, Any]) -> list[str]:
    """jsonschema's messages for `resource`, each prefixed with its JSON path."""
    validator = schema_validator(str(resource.get("resourceType")))
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(resource)]
