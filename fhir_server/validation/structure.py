"""The generated R4 tables (fhir_server/data/, see tools/gen_fhir_data.py) and what the HTTP
layer asks of them for `_summary` and `_elements`.

Element names are those of the StructureDefinitions with `[x]` dropped ("occurrence");
`choice_elements` maps such a name to its JSON names ("occurrenceDateTime", ...). A
primitive's `_name` companion is not listed: it goes wherever `name` goes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@functools.cache
def schema() -> dict[str, Any]:
    """The R4 JSON schema (draft-06), descriptions stripped."""
    data: dict[str, Any] = orjson.loads((DATA_DIR / "fhir.schema.json").read_bytes())
    return data


@functools.cache
def tables() -> dict[str, Any]:
    """structure.json: definitions, resources, valueSets, unexpandable."""
    data: dict[str, Any] = orjson.loads((DATA_DIR / "structure.json").read_bytes())
    return data


def _resource(resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = tables()["resources"].get(resource_type, {})
    return found


@functools.cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements marked isSummary (empty for a type we hold no definition of)."""
    return frozenset(_resource(resource_type).get("summary", ()))


@functools.cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements with min >= 1."""
    return frozenset(_resource(resource_type).get("mandatory", ()))


def choice_elements(resource_type: str) -> dict[str, tuple[str, ...]]:
    """Top-level choice elements: name without [x] -> JSON names (a fresh dict each call)."""
    return dict(_choices(resource_type))


@functools.cache
def _choices(definition: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    found = tables()["definitions"].get(definition, {}).get("choices", {})
    return tuple((name, tuple(keys)) for name, keys in sorted(found.items()))
