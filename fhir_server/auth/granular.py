"""Does a resource satisfy a granular scope's parameters?

Used where no query can decide: per-resource checks (CAN_SEE, writes). Which patient's
compartment a resource is in is not guessed here: the access decision computes it with the
compartment definition, as the write pipeline stores it (fhir_server.access.compartments). The search layer can
do better for searches (a real SearchParameter evaluation); this default understands the
parameters granular scopes use in practice: a top-level element named like the parameter
holding a code, Coding, CodeableConcept, Identifier or Reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def _element_name(param: str) -> str:
    head, *rest = param.split("-")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _values(element: Any) -> Iterator[Any]:
    if isinstance(element, list):
        for item in element:
            yield from _values(item)
    elif element is not None:
        yield element


def _matches(value: Any, wanted: str) -> bool:
    system, bar, code = wanted.rpartition("|")
    if not bar:
        system, code = "", wanted
    if isinstance(value, bool):
        return not system and str(value).lower() == code.lower()
    if isinstance(value, str | int | float):
        return not system and str(value) == code
    if not isinstance(value, dict):
        return False
    if "coding" in value:
        return any(_matches(c, wanted) for c in _values(value["coding"]))
    if "reference" in value:
        ref = str(value["reference"])
        return not system and (ref == code or ref.endswith("/" + code))
    if "code" in value or "value" in value:
        got = value.get("code", value.get("value"))
        if str(got) != code:
            return False
        return not bar or value.get("system", "") == system
    return False


def matches_params(resource: dict[str, Any], params: Iterable[tuple[str, str]]) -> bool:
    """True if every (param, value) holds; a value list "a,b" means either (FHIR OR)."""
    for param, value in params:
        element = resource.get(_element_name(param))
        alternatives = value.split(",")
        if not any(_matches(v, alt) for v in _values(element) for alt in alternatives):
            return False
    return True
