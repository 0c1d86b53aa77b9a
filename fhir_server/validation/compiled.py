"""The walker's tables, compiled once from the R4 JSON schema plus structure.json.

Every schema definition with properties becomes a `Definition`: JSON key -> `Prop` (what the
value must be, whether it is an array), and its min>=1 elements. The schema keywords the
R4 schema uses are exactly: properties, additionalProperties:false, $ref, items, type,
pattern, enum, const, required, and one oneOf (ResourceList, dispatched by resourceType);
`compile_definitions` refuses anything else so that a schema change cannot be half-obeyed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.validation.primitives import Check, build_checks
from fhir_server.validation.terminology import Expansion, all_codes

PRIMITIVE, CODED, COMPLEX, RESOURCE, CONST = range(5)
KNOWN_KEYWORDS = {"properties", "additionalProperties", "required", "$ref", "items", "type",
                  "pattern", "enum", "const", "description"}


@dataclass(slots=True)
class Prop:
    name: str  # the element name in FHIRPath: the key without a leading "_"
    kind: int
    array: bool
    check: Check | None = None  # PRIMITIVE
    codes: frozenset[str] = frozenset()  # CODED
    value_set: str = ""  # CODED from a binding table, or a bound Coding/CodeableConcept
    binding: Expansion | None = None  # COMPLEX Coding/CodeableConcept with a required binding
    target: str = ""  # COMPLEX definition name, CONST value
    definition: Definition | None = None  # COMPLEX, resolved after compiling
    primitive: bool = False  # a primitive value (may pair with "_key")
    companion: bool = False  # a "_key" holding a primitive's id/extensions


@dataclass(slots=True)
class Definition:
    name: str
    props: dict[str, Prop] = field(default_factory=dict)
    # (element name for messages, JSON keys any of which satisfies it)
    required: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(slots=True)
class Compiled:
    definitions: dict[str, Definition]
    resources: frozenset[str]  # resource types (the ResourceList discriminator)
    value_sets: dict[str, Expansion]
    unexpandable: dict[str, str]


def _primitive_name(key: str, checks: dict[str, Check]) -> str:
    # Inline primitives only occur in choice elements: valueBoolean -> boolean.
    for name in sorted(checks, key=len, reverse=True):
        if key.endswith(name[:1].upper() + name[1:]):
            return name
    raise ValueError(f"cannot tell the primitive type of inline property {key}")


def _prop(key: str, spec: dict[str, Any], checks: dict[str, Check]) -> Prop:
    unknown = set(spec) - KNOWN_KEYWORDS
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} at {key} are not supported")
    array = "items" in spec
    inner: dict[str, Any] = spec["items"] if array else spec
    name = key[1:] if key.startswith("_") else key
    if "const" in inner:
        return Prop(name, CONST, array, target=inner["const"])
    if "enum" in inner:
        return Prop(name, CODED, array, codes=frozenset(inner["enum"]), primitive=True)
    if "$ref" in inner:
        target = inner["$ref"].rsplit("/", 1)[-1]
        if target in checks:
            return Prop(name, PRIMITIVE, array, check=checks[target], target=target,
                        primitive=True)
        if target == "ResourceList":
            return Prop(name, RESOURCE, array)
        return Prop(name, COMPLEX, array, target=target, companion=key.startswith("_"))
    primitive = _primitive_name(key, checks)
    return Prop(name, PRIMITIVE, array, check=checks[primitive], target=primitive,
                primitive=True)


def _required(
    names: list[str], choices: dict[str, list[str]], props: dict[str, Prop]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out: list[tuple[str, tuple[str, ...]]] = []
    for name in sorted(set(names)):
        keys = choices.get(name, [name])
        label = f"{name}[x]" if name in choices else name
        out.append((label, tuple(k for key in keys for k in (key, "_" + key) if k in props)))
    return tuple(out)


def compile_definitions(schema: dict[str, Any], structure: dict[str, Any]) -> Compiled:
    definitions: dict[str, Any] = schema["definitions"]
    checks = build_checks(definitions)
    value_sets: dict[str, Expansion] = {
        url: {system: frozenset(codes) for system, codes in by_system.items()}
        for url, by_system in structure["valueSets"].items()
    }
    out: dict[str, Definition] = {}
    for def_name, definition in definitions.items():
        if "properties" not in definition:
            continue
        extra = structure["definitions"].get(def_name, {})
        props = {key: _prop(key, spec, checks) for key, spec in definition["properties"].items()}
        for key, url in extra.get("bindings", {}).items():
            expansion = value_sets.get(url)
            if expansion is None:
                continue  # listed in structure.json "unexpandable"
            prop = props[key]
            prop.value_set = url
            if prop.kind == PRIMITIVE:
                prop.kind, prop.codes = CODED, all_codes(expansion)
            else:
                prop.binding = expansion
        required = [*definition.get("required", ()), *extra.get("required", ())]
        out[def_name] = Definition(def_name, props, _required(required, extra.get("choices", {}),
                                                             props))
    for definition in out.values():
        for prop in definition.props.values():
            if prop.kind == COMPLEX:
                prop.definition = out[prop.target]
    resources = frozenset(schema["discriminator"]["mapping"])
    return Compiled(out, resources, value_sets, dict(structure["unexpandable"]))
