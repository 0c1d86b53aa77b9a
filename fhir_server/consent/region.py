"""A Consent, for one requester and one resource type, as the MongoDB filter of what it denies.

The requester's side of every provision (actor, action, purpose, period, class) is decided
here once per request; what is left depends on the resource (security labels, codes, data
references, data period) and becomes a filter on the values the search layer stores beside
every resource (`sp`, see fhir_server/search/extract.py). The most specific matching
provision decides: a resource takes the decision of the deepest provision that matches it;
siblings that both match and disagree deny.

A region is a MongoDB filter, `ALL` ({}: everything), or `NONE` (None: nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from fhir_server.consent.model import Code, Consent, DataRef, Provision
from fhir_server.search import SearchEngine

Region = dict[str, Any] | None
ALL: dict[str, Any] = {}
NONE: Region = None

RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LEVELS = "ULMNRV"  # unrestricted < low < moderate < normal < restricted < very restricted
UNLABELED_LEVEL = "N"  # a resource without a confidentiality label is normal
SECURITY = "sp._security|"
# The actions a Consent governs a write by (a create collects, any other change corrects).
WRITE_ACTIONS = frozenset({"collect", "correct"})
# The clinical date a provision's dataPeriod is compared with, per type (else lastUpdated).
DATA_DATE = ("date", "sent", "authored-on", "authored", "recorded", "created", "period")
AUTHORSHIP = ("author", "requester", "sender", "recorder", "asserter", "agent")


def all_of(*parts: Region) -> Region:
    if any(p is None for p in parts):
        return NONE
    present = [p for p in parts if p]
    if not present:
        return ALL
    return present[0] if len(present) == 1 else {"$and": present}


def any_of(*parts: Region) -> Region:
    present = [p for p in parts if p is not None]
    if any(p == ALL for p in present):
        return ALL
    if not present:
        return NONE
    return present[0] if len(present) == 1 else {"$or": present}


def none_of(part: Region) -> Region:
    if part is None:
        return ALL
    if part == ALL:
        return NONE
    if len(part) == 1:
        # One field: its own negation keeps the region flat (and index-friendly).
        [(key, condition)] = part.items()
        if not key.startswith("$"):
            if not isinstance(condition, dict):
                return {key: {"$ne": condition}}
            if list(condition) == ["$in"]:
                return {key: {"$nin": condition["$in"]}}
            if list(condition) == ["$nin"]:
                return {key: {"$in": condition["$nin"]}}
    return {"$nor": [part]}


def _merged(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any] | None:
    out = dict(left)
    for key, value in right.items():
        if key not in out:
            out[key] = value
        elif (isinstance(out[key], dict) and isinstance(value, dict)
              and not set(out[key]) & set(value)):
            out[key] = {**out[key], **value}
        else:
            return None
    return out


def disjuncts(region: Region, limit: int = 16) -> list[dict[str, Any]] | None:
    """Flat filters (field conditions only) whose union is `region`; None if there is no
    such form of at most `limit` filters (a $nor, or conditions that collide)."""
    if region is None:
        return []
    out: list[dict[str, Any]] = [{k: v for k, v in region.items() if not k.startswith("$")}]
    for key, value in region.items():
        if not key.startswith("$"):
            continue
        if key not in ("$and", "$or"):
            return None
        groups: list[list[dict[str, Any]]] = []
        for part in value:
            found = disjuncts(part, limit)
            if found is None:
                return None
            groups.append(found)
        if key == "$or":
            groups = [[d for group in groups for d in group]]
        for group in groups:
            crossed = [_merged(a, b) for a in out for b in group]
            if any(c is None for c in crossed) or len(crossed) > limit:
                return None
            out = [c for c in crossed if c is not None]
    return out


def _ids(ids: list[str]) -> Region:
    # Current documents carry the id as _id, history documents as `id` (_id is "id/version").
    if not ids:
        return NONE
    value: Any = ids[0] if len(ids) == 1 else {"$in": ids}
    return {"$or": [{"_id": value}, {"id": value}]}


@dataclass
class Requester:
    """The request's side of every provision: decided once per request."""

    actors: frozenset[str]  # fhirUser and everything it acts as (roles, organizations, teams)
    purposes: frozenset[Code]
    action: str  # access | correct
    now: datetime
    # "Type/id" -> the references that resource holds (for data meaning `related`).
    related: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def has_purpose(self, wanted: Iterable[Code]) -> bool:
        return any(code == c and (not system or not s or system == s)
                   for system, code in wanted for s, c in self.purposes)


class Vocabulary:
    """What the search layer stores for each type, as far as provisions need it."""

    def __init__(self, search: SearchEngine) -> None:
        self.search = search
        self._cache: dict[str, tuple[list[str], list[str], list[str], str]] = {}

    def of(self, rtype: str) -> tuple[list[str], list[str], list[str], str]:
        """(token params, reference params, authorship params, data date field) of `rtype`."""
        if rtype not in self._cache:
            params = self.search.registry.for_type(rtype)
            tokens = [c for c, p in params.items() if p.type == "token" and c not in ("_id", "_security")]
            refs = [c for c, p in params.items() if p.type == "reference"]
            authors = [c for c in AUTHORSHIP if c in refs]
            dated = next((c for c in DATA_DATE if c in params and params[c].type == "date"), None)
            self._cache[rtype] = (tokens, refs, authors, f"sp.{dated}.s" if dated else "ts")
        return self._cache[rtype]


def _level_at_least(level: str) -> Region:
    """Resources whose highest confidentiality label is `level` or above."""
    higher = [f"{CONFIDENTIALITY}|{x}" for x in LEVELS[LEVELS.index(level):]]
    labeled = {SECURITY: {"$in": higher}}
    if LEVELS.index(UNLABELED_LEVEL) >= LEVELS.index(level):
        every = [f"{CONFIDENTIALITY}|{x}" for x in LEVELS]
        return any_of(labeled, {SECURITY: {"$nin": every}})
    return labeled


def _label(provision: Provision, system: str, code: str) -> Region:
    if system == CONFIDENTIALITY and code in LEVELS:
        # A high-water mark: a permit reaches up to the level, a deny from the level up.
        if provision.type == "deny":
            return _level_at_least(code)
        above = LEVELS.index(code) + 1
        return none_of(_level_at_least(LEVELS[above])) if above < len(LEVELS) else ALL
    return {SECURITY: f"{system}|{code}"} if system else {"sp._security": code}


def _codes(codes: tuple[Code, ...], tokens: list[str]) -> Region:
    clauses: list[Region] = []
    for system, code in codes:
        for param in tokens:
            clauses.append({f"sp.{param}|": f"{system}|{code}"} if system else {f"sp.{param}": code})
    return any_of(*clauses)


def _data(ref: DataRef, rtype: str, refs: list[str], authors: list[str], requester: Requester) -> Region:
    target, _, rid = ref.reference.partition("/")
    instance = _ids([rid]) if target == rtype else NONE
    if ref.meaning == "related":
        held = {ref.reference} | set(requester.related.get(ref.reference, ()))
        return _ids(sorted(r.partition("/")[2] for r in held if r.partition("/")[0] == rtype))
    if ref.meaning == "dependents":
        return any_of(instance, *[{f"sp.{p}": ref.reference} for p in refs])
    if ref.meaning == "authoredby":
        return any_of(*[{f"sp.{p}": ref.reference} for p in authors])
    return instance


def _matches_requester(provision: Provision, rtype: str, requester: Requester) -> bool:
    if provision.period is not None and not provision.period.covers(requester.now):
        return False
    if provision.actors and not requester.actors.intersection(provision.actors):
        return False
    if provision.actions and all(code != requester.action for _, code in provision.actions):
        return False
    if provision.purposes and not requester.has_purpose(provision.purposes):
        return False
    return not provision.classes or any(
        code == rtype for system, code in provision.classes if system in ("", RESOURCE_TYPES))


def _resource_filter(provision: Provision, rtype: str, vocabulary: Vocabulary,
                     requester: Requester) -> Region:
    """Which resources of `rtype` the provision is about (its requester side already held)."""
    tokens, refs, authors, date_field = vocabulary.of(rtype)
    parts: list[Region] = [_label(provision, s, c) for s, c in provision.labels]
    if provision.codes:
        parts.append(_codes(provision.codes, tokens))
    if provision.data:
        parts.append(any_of(*[_data(d, rtype, refs, authors, requester) for d in provision.data]))
    period = provision.data_period
    if period is not None:
        bounds = {**({"$gte": period.start} if period.start else {}),
                  **({"$lt": period.end} if period.end else {})}
        parts.append({date_field: bounds} if bounds else ALL)
    return all_of(*parts)


def _denied(rules: tuple[Provision, ...], decision: str, rtype: str, vocabulary: Vocabulary,
            requester: Requester) -> Region:
    """What a node deciding `decision` denies, given its nested `rules`."""
    matched: list[Region] = []
    via_rules: list[Region] = []
    for rule in rules:
        if not _matches_requester(rule, rtype, requester):
            continue
        about = _resource_filter(rule, rtype, vocabulary, requester)
        if about is NONE:
            continue
        matched.append(about)
        via_rules.append(all_of(about, _denied(rule.children, rule.type, rtype, vocabulary, requester)))
    own = none_of(any_of(*matched)) if decision == "deny" else NONE
    return any_of(*via_rules, own)


def _naming(rules: tuple[Provision, ...], action: str) -> tuple[Provision, ...]:
    """The provisions that name `action`, each with its nested ones that do too."""
    return tuple(replace(rule, children=_naming(rule.children, action))
                 for rule in rules if any(code == action for _, code in rule.actions))


def denied_region(consent: Consent, rtype: str, vocabulary: Vocabulary, requester: Requester) -> Region:
    """The resources of `rtype` in the patient's compartment that `consent` denies.

    A Consent governs disclosure (`access`) whole: its base policy and every provision. It
    governs writes (`collect`, `correct`) only where a provision names that action: the
    base policy is about disclosure, so for a write it permits, and provisions that do not
    name the action (with what they frame) do not take part.
    """
    if not consent.applies_at(requester.now):
        return NONE
    if requester.action in WRITE_ACTIONS:
        return _denied(_naming(consent.rules, requester.action), "permit", rtype, vocabulary, requester)
    return _denied(consent.rules, consent.base, rtype, vocabulary, requester)


def _values(doc: Any, path: str) -> list[Any]:
    """The values at a dotted path, through arrays (as MongoDB reads a path)."""
    nodes = [doc]
    for part in path.split("."):
        found = []
        for node in nodes:
            for item in node if isinstance(node, list) else [node]:
                if isinstance(item, dict) and part in item:
                    found.append(item[part])
        nodes = found
    return [v for node in nodes for v in (node if isinstance(node, list) else [node])]


def _holds(values: list[Any], operator: str, operand: Any) -> bool:
    if operator == "$in":
        return any(v in operand for v in values)
    if operator == "$nin":
        return not any(v in operand for v in values)
    if operator == "$ne":
        return operand not in values
    if operator == "$gte":
        return any(v >= operand for v in values if type(v) is type(operand))
    if operator == "$lt":
        return any(v < operand for v in values if type(v) is type(operand))
    raise ValueError(f"unexpected operator {operator}")


def matches(region: Region, doc: dict[str, Any]) -> bool:
    """Does the stored document `doc` fall in `region`? The same answer MongoDB would give,
    for the operators regions are made of; used where a logical operator in the query would
    keep the embedded database from using an index (see docs/consent.md)."""
    if region is None:
        return False
    for key, condition in region.items():
        if key == "$and":
            ok = all(matches(r, doc) for r in condition)
        elif key == "$or":
            ok = any(matches(r, doc) for r in condition)
        elif key == "$nor":
            ok = not any(matches(r, doc) for r in condition)
        elif isinstance(condition, dict):
            values = _values(doc, key)
            ok = all(_holds(values, op, operand) for op, operand in condition.items())
        else:
            ok = condition in _values(doc, key)
        if not ok:
            return False
    return True
