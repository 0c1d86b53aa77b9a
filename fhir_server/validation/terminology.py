"""Local value-set expansion and required-binding checks.

Only what can be expanded without a terminology server: `include.concept` lists, whole
code systems whose content is complete, and other value sets we hold. Filters (is-a, ...)
and external systems (BCP-13 MIME types, ...) cannot; callers list those as unexpandable.
The generator (tools/gen_fhir_data.py) expands the core value sets with this module, and the
validator expands value sets placed in profiles/ with it at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# An expansion: system -> codes ("" holds codes whose system is unknown, e.g. from `code`).
Expansion = dict[str, frozenset[str]]


class Unexpandable(Exception):
    """The value set cannot be expanded from local definitions (the message says why)."""


def canonical(url: str) -> str:
    """A canonical reference without its `|version`."""
    return url.split("|", 1)[0]


def _concepts(concepts: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for concept in concepts:
        if "code" in concept:
            out.add(concept["code"])
        out |= _concepts(concept.get("concept", []))
    return out


def _part(
    part: dict[str, Any],
    code_systems: Mapping[str, dict[str, Any]],
    value_sets: Mapping[str, dict[str, Any]],
    seen: frozenset[str],
) -> dict[str, set[str]]:
    if part.get("filter"):
        raise Unexpandable("uses a filter")
    imported: dict[str, set[str]] | None = None
    for url in part.get("valueSet", []):
        other = expand(value_sets.get(canonical(url), {"url": url}), code_systems, value_sets, seen)
        sub = {system: set(codes) for system, codes in other.items()}
        # several value sets in one include: their intersection
        prior = imported
        imported = sub if prior is None else {s: prior[s] & c for s, c in sub.items() if s in prior}
    system = part.get("system")
    if system is None:
        if imported is None:
            raise Unexpandable("an include names neither a system nor a value set")
        return imported
    if imported is not None:
        raise Unexpandable("an include combines a system with value sets")
    if "concept" in part:
        return {system: {c["code"] for c in part["concept"]}}
    code_system = code_systems.get(canonical(system))
    if code_system is None:
        raise Unexpandable(f"code system {system} is not held locally")
    if code_system.get("content") != "complete":
        raise Unexpandable(f"code system {system} is not complete ({code_system.get('content')})")
    return {system: _concepts(code_system.get("concept", []))}


def expand(
    value_set: dict[str, Any],
    code_systems: Mapping[str, dict[str, Any]],
    value_sets: Mapping[str, dict[str, Any]],
    seen: frozenset[str] = frozenset(),
) -> Expansion:
    """Expands `value_set` (a ValueSet resource) or raises Unexpandable."""
    url = value_set.get("url", "?")
    if url in seen:
        raise Unexpandable(f"{url} includes itself")
    seen = seen | {url}
    if "expansion" in value_set and "compose" not in value_set:
        found: dict[str, set[str]] = {}
        for item in value_set["expansion"].get("contains", []):
            found.setdefault(item.get("system", ""), set()).add(item["code"])
        return {s: frozenset(c) for s, c in found.items()}
    compose = value_set.get("compose")
    if compose is None:
        raise Unexpandable(f"value set {url} is not held locally")
    codes: dict[str, set[str]] = {}
    for part in compose.get("include", []):
        for system, found_codes in _part(part, code_systems, value_sets, seen).items():
            codes.setdefault(system, set()).update(found_codes)
    for part in compose.get("exclude", []):
        for system, found_codes in _part(part, code_systems, value_sets, seen).items():
            codes.get(system, set()).difference_update(found_codes)
    return {s: frozenset(c) for s, c in codes.items() if c}


def all_codes(expansion: Expansion) -> frozenset[str]:
    return frozenset().union(*expansion.values()) if expansion else frozenset()


def coding_in(coding: Any, expansion: Expansion) -> bool:
    """Whether a Coding's (system, code) is in the expansion (no system: code in any system)."""
    if not isinstance(coding, dict):
        return False
    code = coding.get("code")
    if not isinstance(code, str):
        return False
    system = coding.get("system")
    if system is None:
        return any(code in codes for codes in expansion.values())
    return code in expansion.get(system, ())


def binding_problem(value: Any, expansion: Expansion) -> str | None:
    """Why `value` (code, Coding or CodeableConcept) breaks a required binding, or None."""
    if isinstance(value, str):
        return None if value in all_codes(expansion) else f"code '{value[:64]}' is not allowed"
    if not isinstance(value, dict):
        return None  # structure errors are reported elsewhere
    if "coding" not in value and ("code" in value or "system" in value):  # a Coding
        if "code" not in value:
            return None
        return None if coding_in(value, expansion) else _coding_text(value) + " is not allowed"
    codings = value.get("coding")
    if not isinstance(codings, list) or not codings:
        return "no coding given, and a code from the value set is required"
    if any(coding_in(c, expansion) for c in codings):
        return None
    shown = ", ".join(_coding_text(c) for c in codings[:3] if isinstance(c, dict))
    return f"none of the codings ({shown}) is in the value set"


def _coding_text(coding: dict[str, Any]) -> str:
    system = coding.get("system")
    code = str(coding.get("code"))[:64]
    return f"'{system}|{code}'" if system else f"'{code}'"
