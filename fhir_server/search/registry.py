"""The SearchParameter registry: the generated R4 table plus our own from `profiles/`.

Each parameter's FHIRPath expression is split (by tools/gen_search_params.py) into union
branches for its type. A branch that is a plain dotted path (`Task.owner`) is walked directly
over the JSON, which is ~20x faster than fhirpathpy; anything else (`where`, `as`, functions)
is compiled once with fhirpathpy. `.where(resolve() is T)` is not evaluated by FHIRPath at
all: it becomes a filter on the reference's type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_server.resource_types import STORED, STORED_TYPES

DATA = Path(__file__).resolve().parent.parent / "data"
SIMPLE_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$")
RESOLVE_IS = re.compile(r"^(?P<path>.*)\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)$")

Evaluator = Callable[[Any], list[Any]]


@cache
def _choice_names() -> frozenset[str]:
    """Every name a choice element's JSON names could start with: each R4 element name's
    prefixes before an upper-case letter (`value` of valueQuantity, and some that are not
    choices: a superset, so only names outside it skip the search for a typed key)."""
    schema = orjson.loads((DATA / "fhir.schema.json").read_bytes())
    names = {name for definition in schema["definitions"].values() for name in definition.get("properties", {})}
    return frozenset(n[:i] for n in names for i in range(1, len(n)) if n[i].isupper())


def _choice(node: dict[str, Any], name: str) -> Any:
    # A choice element (`value[x]`) is named by its type in JSON: valueQuantity, ...
    if name not in _choice_names():
        return None
    for key, candidate in node.items():
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return candidate
    return None


def walker(path: str) -> Evaluator:
    """A direct evaluator for a dotted path; the first segment names the resource type.
    (`_children` step by step, unrolled: it runs for every parameter of every write.)"""
    steps = path.split(".")[1:]

    def evaluate(resource: Any) -> list[Any]:
        nodes = [resource]
        for step in steps:
            found: list[Any] = []
            for node in nodes:
                if not isinstance(node, dict):
                    continue
                value = node.get(step)
                if value is None:
                    value = _choice(node, step)
                    if value is None:
                        continue
                if isinstance(value, list):
                    found.extend([v for v in value if v is not None])
                else:
                    found.append(value)
            nodes = found
            if not nodes:
                break
        return nodes

    return evaluate


def _fhirpath(expression: str) -> Evaluator:
    import fhirpathpy
    from fhirpathpy.models import models

    compiled = fhirpathpy.compile(expression, models["r4"])

    def evaluate(resource: Any) -> list[Any]:
        result = compiled(resource, None)
        return list(result) if isinstance(result, list) else [result]

    return evaluate


def compile_path(path: str) -> Evaluator:
    return walker(path) if SIMPLE_PATH.match(path) else _fhirpath(path)


@dataclass(frozen=True)
class Branch:
    evaluate: Evaluator
    is_type: str | None  # from `.where(resolve() is T)`: keep references to T only
    # The top-level element a plain dotted path starts at (`Task.owner`: "owner"); None when
    # the expression may read anything (FHIRPath functions): what the values depend on.
    root: str | None = None


# Composite component types matched by the exact, normalized value.
EXACT_COMPONENTS = frozenset({"token", "reference", "string", "uri"})


@dataclass(frozen=True)
class Component:
    type: str
    evaluate: Evaluator


@dataclass(frozen=True)
class SearchParam:
    code: str
    resource_type: str
    type: str  # number date string token reference composite quantity uri special
    url: str
    documentation: str
    branches: tuple[Branch, ...] = ()
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()

    @property
    def field(self) -> str:
        return f"sp.{self.code}"

    @property
    def searchable(self) -> bool:
        """False for `special` parameters (Location near) and for composites with a date,
        number or quantity component (Observation code-value-quantity): composites match
        their joined component values exactly, which has no place for prefixes and ranges.
        Searching by one is refused (not-supported), and the CapabilityStatement omits it."""
        if self.type == "special":
            return False
        return self.type != "composite" or all(c.type in EXACT_COMPONENTS for c in self.components)

    def target_types(self) -> tuple[str, ...]:
        return self.targets or STORED_TYPES


@dataclass
class Registry:
    params: dict[str, dict[str, SearchParam]] = field(default_factory=dict)
    compartments: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    valuesets: dict[str, frozenset[str]] = field(default_factory=dict)

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.params.get(resource_type, {}).get(code)

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        return self.params.get(resource_type, {})


def _branches(entries: list[dict[str, str]]) -> tuple[Branch, ...]:
    return tuple(Branch(compile_path(e["path"]), e.get("is"), _root(e["path"])) for e in entries)


def _root(path: str) -> str | None:
    steps = path.split(".")
    return steps[1] if SIMPLE_PATH.match(path) and len(steps) > 1 else None


def _param(rtype: str, code: str, entry: dict[str, Any]) -> SearchParam:
    return SearchParam(
        code=code,
        resource_type=rtype,
        type=entry["type"],
        url=entry["url"],
        documentation=entry.get("doc", ""),
        branches=_branches(entry.get("branches", [])),
        targets=tuple(entry.get("target", ())),
        components=tuple(
            Component(c["type"], walker("X." + c["path"]) if SIMPLE_PATH.match(c["path"])
                      else _fhirpath(c["path"]))
            for c in entry.get("components", ())
        ),
    )


def _resources(profiles_dir: Path) -> Iterator[dict[str, Any]]:
    """Every resource in the JSON files under `profiles_dir` (Bundles opened)."""
    if not profiles_dir.is_dir():
        return
    for path in sorted(profiles_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if data.get("resourceType") == "Bundle":
            for entry in data.get("entry", []):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    yield resource
        else:
            yield data


def _custom_definitions(profiles_dir: Path) -> Iterator[dict[str, Any]]:
    return (r for r in _resources(profiles_dir) if r.get("resourceType") == "SearchParameter")


def _split_union(expression: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in expression:
        depth += (ch == "(") - (ch == ")")
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()] if current.strip() else parts


def custom_entry(definition: dict[str, Any], rtype: str) -> dict[str, Any] | None:
    """A SearchParameter resource in the generated table's shape, for `rtype`."""
    branches = []
    for raw in _split_union(str(definition.get("expression", ""))):
        path = raw.strip("() ")
        if path.split(".", 1)[0] not in (rtype, "Resource", "DomainResource"):
            continue
        path = rtype + path[len(path.split(".", 1)[0]):]
        match = RESOLVE_IS.match(path)
        branches.append({"path": match.group("path"), "is": match.group("type")} if match
                        else {"path": path})
    if not branches:
        return None
    return {"type": definition.get("type", "token"), "url": definition.get("url", ""),
            "doc": definition.get("description", ""), "branches": branches,
            "target": definition.get("target", [])}


# R4's Patient CompartmentDefinition leaves Binary out, while binary.html says access to a
# Binary is access to its securityContext: a Binary whose securityContext is a Patient is in
# that patient's compartment (through profiles/SearchParameter-binary-security-context.json),
# so patient scopes and the patient's Consent govern it like the DocumentReference naming it.
EXTRA_PATIENT_COMPARTMENT: dict[str, list[str]] = {"Binary": ["security-context"]}


def load(profiles_dir: Path | None = None) -> Registry:
    table = json.loads((DATA / "search_parameters.json").read_text())
    registry = Registry()
    for rtype, entries in table["types"].items():
        registry.params[rtype] = {code: _param(rtype, code, e) for code, e in entries.items()}
    registry.compartments = table["compartments"]
    for definition in _custom_definitions(profiles_dir) if profiles_dir else ():
        for rtype in definition.get("base", []):
            entry = custom_entry(definition, rtype)
            if rtype in STORED and entry and definition.get("code"):
                registry.params[rtype][definition["code"]] = _param(rtype, definition["code"], entry)
    for rtype, codes in EXTRA_PATIENT_COMPARTMENT.items():
        present = [c for c in codes if c in registry.params.get(rtype, {})]
        if present:
            patient = registry.compartments.setdefault("Patient", {})
            patient[rtype] = list(dict.fromkeys([*patient.get(rtype, []), *present]))
    valuesets = json.loads((DATA / "search_parameters_valuesets.json").read_text())
    registry.valuesets = {url: frozenset(codes) for url, codes in valuesets.items()}
    if profiles_dir:
        registry.valuesets.update(_profile_valuesets(profiles_dir))
    return registry


def _profile_valuesets(profiles_dir: Path) -> dict[str, frozenset[str]]:
    """Our own ValueSets (enumerated concepts, or whole CodeSystems we publish) for :in."""
    resources = [r for r in _resources(profiles_dir)
                 if r.get("resourceType") in ("ValueSet", "CodeSystem")]
    systems = {r.get("url"): r for r in resources if r["resourceType"] == "CodeSystem"}

    def codes(concepts: list[Any]) -> list[str]:
        out: list[str] = []
        for c in concepts:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                out += [c["code"], *codes(c.get("concept", []))]
        return out

    out: dict[str, frozenset[str]] = {}
    for vs in resources:
        if vs["resourceType"] != "ValueSet" or not isinstance(vs.get("url"), str):
            continue
        members: set[str] = set()
        for include in (vs.get("compose") or {}).get("include", []):
            system = include.get("system")
            if not isinstance(system, str) or include.get("filter"):
                continue
            concepts = include.get("concept") or (systems.get(system) or {}).get("concept", [])
            members.update(f"{system}|{code}" for code in codes(concepts))
        if members:
            out[vs["url"]] = frozenset(members)
    return out
