"""One pass over a resource that checks everything structural and the required bindings.

It does what the R4 JSON schema does (unknown elements, JSON types, primitive formats,
enums, `required`) from the compiled tables, and what the schema cannot: min>=1 elements
from the StructureDefinitions, required bindings the schema has no enum for, FHIR JSON's
rules on null (only inside primitive arrays, paired with a value in the `_name` twin array)
and on empty objects, arrays and strings, control characters, and a depth guard.
It is a hand-written walk rather than jsonschema because it is 10-250x faster on the same
schema (bench/validation.py: ~30-70 us for a Task) and because locations come out as
FHIRPath ("Task.input[0].type"; a choice element keeps its JSON name, "valueString").
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue
from fhir_server.validation.compiled import (
    CODED,
    COMPLEX,
    CONST,
    PRIMITIVE,
    RESOURCE,
    Compiled,
    Definition,
    Prop,
)
from fhir_server.validation.terminology import binding_problem

# Objects nested deeper than this are not walked (an error says so). The HTTP layer refuses
# JSON deeper than 64 levels (objects and arrays) first; this guards direct callers.
MAX_DEPTH = 64
# Issue codes whose errors make a resource structurally invalid (HTTP 400); the others
# (code-invalid, invariant, processing) are terminology / rule violations (HTTP 422).
STRUCTURAL_CODES = frozenset({"structure", "required", "value", "invalid", "too-costly"})


def _show(key: str) -> str:
    return key if len(key) <= 64 else key[:61] + "..."


def _codes_text(codes: frozenset[str]) -> str:
    shown = sorted(codes)
    return ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "")


class Walker:
    """Collects issues for one resource; not shared between threads (create one per call)."""

    __slots__ = ("compiled", "issues")

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.issues: list[Issue] = []

    def error(self, code: str, message: str, path: str) -> None:
        self.issues.append(Issue("error", code, f"{path}: {message}", (path,)))

    def resource(self, value: Any, path: str, depth: int) -> None:
        if type(value) is not dict:
            self.error("structure", "a resource must be a JSON object", path)
            return
        rtype = value.get("resourceType")
        if type(rtype) is not str or rtype not in self.compiled.resources:
            shown = f"'{rtype[:64]}'" if isinstance(rtype, str) else "missing"
            self.error("structure", f"resourceType is {shown}, not an R4 resource type", path)
            return
        self.object(value, self.compiled.definitions[rtype], path, depth)

    def object(self, obj: dict[str, Any], definition: Definition, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.error("too-costly", f"nested deeper than {MAX_DEPTH} levels; not checked", path)
            return
        if not obj:
            self.error("structure", "must not be an empty object", path)
            return
        props = definition.props
        for key, value in obj.items():
            prop = props.get(key)
            if prop is None:
                self.error("structure", f"unknown element '{_show(key)}'", f"{path}.{_show(key)}")
                continue
            if prop.array:
                if type(value) is not list:
                    self.error("structure", "must be a JSON array", f"{path}.{prop.name}")
                    continue
                if not value:
                    self.error("structure", "must not be an empty array", f"{path}.{prop.name}")
                    continue
                if prop.companion:
                    twin = obj.get(prop.name)
                    if type(twin) is list and len(twin) != len(value):
                        self.error("structure", f"'{prop.name}' and '{key}' must have as many "
                                   "items", f"{path}.{prop.name}")
                for index, item in enumerate(value):
                    if item is None:
                        self.null_item(obj, key, prop, index, f"{path}.{prop.name}[{index}]")
                    else:
                        self.value(item, prop, path, index, depth)
            elif value is None:
                self.error("structure", "must not be null", f"{path}.{prop.name}")
            elif type(value) is list:
                self.error("structure", "must be a single value, not an array",
                           f"{path}.{prop.name}")
            else:
                self.value(value, prop, path, -1, depth)
        for name, keys in definition.required:
            for key in keys:
                if key in obj:
                    break
            else:
                self.error("required", "minimum required = 1, but found 0", f"{path}.{name}")

    def null_item(self, obj: dict[str, Any], key: str, prop: Prop, index: int, path: str) -> None:
        # ["a", null] with "_x": [null, {...}]: a null stands in for a value whose twin holds
        # the extensions (or for the absent extensions of a value); nowhere else.
        if prop.primitive or prop.companion:
            twin = obj.get(prop.name if prop.companion else "_" + key)
            if type(twin) is list and index < len(twin) and twin[index] is not None:
                return
        self.error("structure", "must not be null", path)

    def value(self, value: Any, prop: Prop, parent: str, index: int, depth: int) -> None:
        kind = prop.kind
        if kind == PRIMITIVE:
            problem = prop.check(value) if prop.check is not None else None
            if problem is not None:
                self.error(problem[0], problem[1], _path(parent, prop.name, index))
        elif kind == COMPLEX:
            if type(value) is not dict:
                self.error("structure", "must be a JSON object", _path(parent, prop.name, index))
                return
            path = _path(parent, prop.name, index)
            assert prop.definition is not None
            self.object(value, prop.definition, path, depth + 1)
            if prop.binding is not None:
                unbound = binding_problem(value, prop.binding)
                if unbound is not None:
                    self.error("code-invalid", f"{unbound} (required binding to "
                               f"{prop.value_set})", path)
        elif kind == CODED:
            if type(value) is not str:
                self.error("structure", "must be a JSON string", _path(parent, prop.name, index))
            elif value not in prop.codes:
                bound = f" ({prop.value_set})" if prop.value_set else ""
                self.error("code-invalid", f"'{value[:64]}' is not one of the allowed codes"
                           f"{bound}: {_codes_text(prop.codes)}", _path(parent, prop.name, index))
        elif kind == RESOURCE:
            path = _path(parent, prop.name, index)
            self.resource(value, path, depth + 1)
            if type(value) is dict and "contained" in value:
                self.error("invariant", "a contained resource must not contain resources "
                           "(dom-2)", path)
        elif kind == CONST and value != prop.target:
            self.error("invalid", f"must be '{prop.target}'", _path(parent, prop.name, index))


def _path(parent: str, name: str, index: int) -> str:
    return f"{parent}.{name}" if index < 0 else f"{parent}.{name}[{index}]"
