"""Profiles (StructureDefinitions) and value sets from the profiles/ folder, and their checks.

A resource naming a held profile in `meta.profile` (canonical url, optionally `|version`) is
checked against the profile's differential and those of its held base profiles: min/max
cardinality, fixed[x] (equal) and pattern[x] (contains), required bindings to value sets we
hold (core expansions and value sets in profiles/), the allowed types of a choice element,
and the target resource types of a Reference when the reference says its type.
Slicing is left out: sliced elements and everything under a slice are skipped. Invariants
(constraint.expression) are not evaluated either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_server.errors import Issue
from fhir_server.validation.terminology import (
    Expansion,
    Unexpandable,
    binding_problem,
    canonical,
    expand,
)

log = logging.getLogger(__name__)

CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
TYPED_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """What a differential element asks of every occurrence of its path."""

    label: str  # "Task.input.value[x]"
    steps: tuple[str, ...]  # element names below the resource: ("input", "value[x]")
    min: int = 0
    max: int | None = None  # None: unbounded
    fixed: tuple[str, Any] | None = None  # ("fixedCode", "order")
    pattern: tuple[str, Any] | None = None
    value_set: str = ""
    choice_keys: frozenset[str] = frozenset()  # allowed JSON names of a restricted [x]
    target_profiles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    version: str | None
    type: str
    base: str
    rules: tuple[Rule, ...]


def _cap(code: str) -> str:
    return code[:1].upper() + code[1:]


def _rule(element: dict[str, Any], rtype: str) -> Rule | None:
    path: str = element["path"]
    steps = tuple(path.split(".")[1:])
    if not steps or "sliceName" in element or ":" in element.get("id", ""):
        return None
    fixed = next(((k, v) for k, v in element.items() if k.startswith("fixed")), None)
    pattern = next(((k, v) for k, v in element.items() if k.startswith("pattern")), None)
    binding = element.get("binding", {})
    value_set = canonical(binding["valueSet"]) if binding.get("strength") == "required" else ""
    types = element.get("type", [])
    choice_keys: frozenset[str] = frozenset()
    if steps[-1].endswith("[x]") and types:
        choice_keys = frozenset(steps[-1][:-3] + _cap(t["code"]) for t in types)
    targets = tuple(p for t in types if t.get("code") == "Reference"
                    for p in t.get("targetProfile", []))
    maximum = element.get("max")
    rule = Rule(
        label=path, steps=steps, min=element.get("min", 0),
        max=None if maximum in (None, "*") else int(maximum),
        fixed=fixed, pattern=pattern, value_set=value_set, choice_keys=choice_keys,
        target_profiles=targets,
    )
    if rule == Rule(label=path, steps=steps):
        return None  # nothing to check
    return rule


def parse_profile(sd: dict[str, Any]) -> Profile:
    rtype = sd["type"]
    rules = tuple(r for el in sd.get("differential", {}).get("element", [])
                  if (r := _rule(el, rtype)) is not None)
    return Profile(sd["url"], sd.get("version"), rtype, sd.get("baseDefinition", ""), rules)


def _children(node: Any, step: str) -> Iterator[tuple[str, Any]]:
    """(JSON key, value) of the element `step` in `node`; a choice yields each JSON name."""
    if not isinstance(node, dict):
        return
    if step.endswith("[x]"):
        base = step[:-3]
        for key, value in node.items():
            if key.startswith(base) and key[len(base):][:1].isupper():
                yield key, value
    elif step in node:
        yield step, node[step]
    elif "_" + step in node:
        yield step, node["_" + step]


def _items(path: str, key: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [(f"{path}.{key}[{i}]", v) for i, v in enumerate(value)]
    return [(f"{path}.{key}", value)]


def _contains(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_contains(v, value.get(k)) for k, v in
                                               pattern.items())
    if isinstance(pattern, list):
        values = value if isinstance(value, list) else [value]
        return all(any(_contains(p, v) for v in values) for p in pattern)
    return bool(pattern == value)


class ProfileSet:
    """Profiles and value sets loaded from a folder; read-only after construction."""

    def __init__(self, core_value_sets: dict[str, Expansion]) -> None:
        self.profiles: dict[str, Profile] = {}
        self.value_sets: dict[str, Expansion] = dict(core_value_sets)
        self.resources: list[tuple[Path, dict[str, Any]]] = []  # every definition loaded

    def load(self, folder: Path) -> None:
        if not folder.is_dir():
            return
        code_systems: dict[str, dict[str, Any]] = {}
        value_sets: dict[str, dict[str, Any]] = {}
        for file in sorted(folder.glob("*.json")):
            try:
                data = orjson.loads(file.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{file}: not valid JSON ({exc})") from exc
            entries = ([e.get("resource", {}) for e in data.get("entry", [])]
                       if data.get("resourceType") == "Bundle" else [data])
            for resource in entries:
                kind = resource.get("resourceType")
                if kind not in ("StructureDefinition", "ValueSet", "CodeSystem"):
                    continue
                self.resources.append((file, resource))
                if kind == "StructureDefinition":
                    profile = parse_profile(resource)
                    self.profiles[profile.url] = profile
                elif kind == "ValueSet":
                    value_sets[resource["url"]] = resource
                else:
                    code_systems[resource["url"]] = resource
        known = {url: {"url": url, "expansion": {"contains": [
            {"system": s, "code": c} for s, codes in exp.items() for c in sorted(codes)]}}
            for url, exp in self.value_sets.items()}
        for url, value_set in value_sets.items():
            try:
                self.value_sets[url] = expand(value_set, code_systems, {**known, **value_sets})
            except Unexpandable as exc:
                log.warning("value set %s in %s cannot be expanded: %s", url, folder, exc)

    def find(self, reference: str) -> Profile | None:
        url, _, version = reference.partition("|")
        profile = self.profiles.get(url)
        if profile is None or (version and profile.version != version):
            return None
        return profile

    def check(self, resource: dict[str, Any], path: str) -> list[Issue]:
        """Issues for every `meta.profile` of `resource` (located at `path`)."""
        meta = resource.get("meta")
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        if not isinstance(claimed, list):
            return []
        issues: list[Issue] = []
        for index, reference in enumerate(claimed):
            if not isinstance(reference, str):
                continue
            profile = self.find(reference)
            where = f"{path}.meta.profile[{index}]"
            if profile is None:
                issues.append(Issue("warning", "not-supported",
                                    f"Profile {reference[:200]} is unknown to this server; "
                                    "the resource was checked against the base R4 definition "
                                    "only", (where,)))
                continue
            issues += self._check_profile(resource, path, profile, set())
        return issues

    def _check_profile(self, resource: dict[str, Any], path: str, profile: Profile,
                       seen: set[str]) -> list[Issue]:
        seen.add(profile.url)
        if resource.get("resourceType") != profile.type:
            return [Issue("error", "processing", f"Profile {profile.url} is for {profile.type}, "
                          f"not {resource.get('resourceType')}", (path,))]
        issues: list[Issue] = []
        for rule in profile.rules:
            issues += self._check_rule(resource, path, profile.url, rule)
        base = self.profiles.get(profile.base)
        if base is not None and base.url not in seen:
            issues += self._check_profile(resource, path, base, seen)
        return issues

    def _check_rule(self, resource: dict[str, Any], root: str, url: str,
                    rule: Rule) -> list[Issue]:
        issues: list[Issue] = []

        def fail(code: str, message: str, where: str) -> None:
            issues.append(Issue("error", code, f"{where}: {message} (profile {url})", (where,)))

        parents: list[tuple[str, Any]] = [(root, resource)]
        for step in rule.steps[:-1]:
            parents = [item for p, node in parents for key, value in _children(node, step)
                       for item in _items(p, key, value)]
        last = rule.steps[-1]
        for parent_path, parent in parents:
            if not isinstance(parent, dict):
                continue
            found = [item for key, value in _children(parent, last)
                     for item in _items(parent_path, key, value)]
            where = f"{parent_path}.{last}"
            if len(found) < rule.min:
                fail("required", f"minimum required = {rule.min}, but found {len(found)}", where)
            if rule.max is not None and len(found) > rule.max:
                fail("structure", f"maximum allowed = {rule.max}, but found {len(found)}", where)
            if rule.choice_keys:
                for key, _ in _children(parent, last):
                    if key not in rule.choice_keys:
                        fail("structure", f"{key} is not allowed here; allowed: "
                             f"{', '.join(sorted(rule.choice_keys))}", f"{parent_path}.{key}")
            for item_path, value in found:
                self._check_value(resource, rule, item_path, value, fail)
        return issues

    def _check_value(self, resource: dict[str, Any], rule: Rule, where: str, value: Any,
                     fail: Callable[[str, str, str], None]) -> None:
        if rule.fixed is not None and value != rule.fixed[1]:
            fail("value", f"must be exactly {orjson.dumps(rule.fixed[1]).decode()[:200]} "
                 f"({rule.fixed[0]})", where)
        if rule.pattern is not None and not _contains(rule.pattern[1], value):
            fail("value", f"must match {orjson.dumps(rule.pattern[1]).decode()[:200]} "
                 f"({rule.pattern[0]})", where)
        if rule.value_set:
            expansion = self.value_sets.get(rule.value_set)
            problem = binding_problem(value, expansion) if expansion is not None else None
            if problem is not None:
                fail("code-invalid", f"{problem} (required binding to {rule.value_set})", where)
        if rule.target_profiles and isinstance(value, dict):
            rtype = self._referenced_type(resource, value)
            allowed = {self._profile_type(p) for p in rule.target_profiles}
            if rtype is not None and None not in allowed and rtype not in allowed:
                fail("structure", f"refers to a {rtype}; allowed: "
                     f"{', '.join(sorted(str(a) for a in allowed))}", where)

    def _profile_type(self, url: str) -> str | None:
        url = canonical(url)
        if url.startswith(CORE_SD):
            return url[len(CORE_SD):]
        held = self.profiles.get(url)
        return held.type if held is not None else None

    @staticmethod
    def _referenced_type(resource: dict[str, Any], reference: dict[str, Any]) -> str | None:
        ref = reference.get("reference")
        if isinstance(ref, str) and ref.startswith("#"):
            for contained in resource.get("contained", []):
                if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                    rtype = contained.get("resourceType")
                    return rtype if isinstance(rtype, str) else None
            return None
        match = TYPED_REFERENCE.search(ref) if isinstance(ref, str) else None
        if match is not None:
            return match.group(1)
        declared = reference.get("type")
        return declared if isinstance(declared, str) and declared.isalpha() else None
