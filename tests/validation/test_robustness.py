"""Whatever JSON arrives, the validator answers with issues: it never raises."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from fhir_server.validation import Validator

EXAMPLES = Path(__file__).parent.parent / "fixtures" / "examples"
ODD_VALUES: list[Any] = [None, "", [], {}, [None], [[]], [{}], 0, -1, 1.5, 2**70, True, "x\x00",
                         {"resourceType": "Patient"}, [1, "a", None], {"": None}, "\ud800"]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _replace(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(resource)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def test_mutated_examples_never_raise(validator: Validator) -> None:
    rng = random.Random(20261121)
    names = ["task-example1.json", "patient-example.json", "consent-example-Emergency.json",
             "appointment-example.json", "bundle-transaction.json", "auditevent-example.json"]
    checked = 0
    for name in names:
        resource = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
        paths = _paths(resource)
        for path in rng.sample(paths, min(len(paths), 150)):
            mutated = _replace(resource, path, rng.choice(ODD_VALUES))
            result = validator.validate(mutated)
            assert all(i.expression for i in result.issues)
            checked += 1
    assert checked > 500


def test_non_objects_are_refused(validator: Validator) -> None:
    values: list[Any] = [[], "Patient", None, 3]
    for value in values:
        result = validator.validate(value)
        assert [i.code for i in result.errors] == ["structure"]
