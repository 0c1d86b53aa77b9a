"""SMART scopes (v1, v2 and granular v2): parsing and the access decision. Pure functions.

A resource scope is `<context>/<type>.<permissions>[?<query>]`: context is patient, user or
system; type a resource type or `*`; permissions the v2 letters `cruds` (in that order) or the
v1 words read (=rs), write (=cud) and * (=cruds). The query of a granular scope narrows what
the permission covers (e.g. `patient/Observation.rs?category=laboratory`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qsl

Context = Literal["patient", "user", "system"]

V2_ORDER = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}

# FHIR interaction -> the v2 permission letter it needs. Instance history reads one
# resource's versions (r); history over a type or the system is a search (s).
PERMISSION_OF: dict[str, str] = {
    "read": "r",
    "vread": "r",
    "history": "r",
    "history-instance": "r",
    "search": "s",
    "search-type": "s",
    "search-system": "s",
    "search-compartment": "s",
    "history-type": "s",
    "history-system": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}

_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[a-z*]+)"
    r"(?:\?(?P<query>.+))?$"
)

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scope:
    context: Context
    resource_type: str  # a FHIR type, or "*"
    permissions: frozenset[str]  # letters of "cruds"
    query: Params = ()  # granular constraints, ANDed
    raw: str = ""

    def covers_type(self, resource_type: str) -> bool:
        return self.resource_type in ("*", resource_type)

    def covers(self, other: Scope) -> bool:
        """True if everything `other` grants is granted by this scope (used for narrowing)."""
        return (
            self.context == other.context
            and (self.resource_type == "*" or self.resource_type == other.resource_type)
            and other.permissions <= self.permissions
            and set(self.query) <= set(other.query)
        )


def parse_scope(text: str) -> Scope | None:
    """The resource scope `text` denotes, or None for other scopes (openid, launch, ...)."""
    match = _SCOPE.match(text)
    if not match:
        return None
    perm = match["perm"]
    if perm in V1_PERMISSIONS:
        if match["query"]:
            return None  # granular constraints exist in v2 only
        letters = V1_PERMISSIONS[perm]
    else:
        # v2 letters must be a non-empty, in-order subset of "cruds" with no repeats.
        positions = [V2_ORDER.find(c) for c in perm]
        if -1 in positions or positions != sorted(set(positions)):
            return None
        letters = perm
    query: Params = ()
    if match["query"]:
        try:
            query = tuple(parse_qsl(match["query"], keep_blank_values=False, strict_parsing=True))
        except ValueError:
            return None
    context: Context = match["context"]  # type: ignore[assignment]
    return Scope(context, match["type"], frozenset(letters), query, text)


def parse_scopes(scopes: Iterable[str]) -> list[Scope]:
    return [s for s in (parse_scope(t) for t in scopes) if s is not None]


@lru_cache(maxsize=4096)
def parse_scope_set(scopes: frozenset[str]) -> tuple[Scope, ...]:
    """parse_scopes, remembered: a token's scopes are decided on several times per request."""
    return tuple(parse_scopes(scopes))


def split_scope_string(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split() if s]


@dataclass(frozen=True)
class Grant:
    """One way access is granted: confined to `patient`'s compartment (if set) AND `params`."""

    patient: str | None
    params: Params

    @property
    def unrestricted(self) -> bool:
        return self.patient is None and not self.params


@dataclass(frozen=True)
class Access:
    """The decision for one (resource type, interaction): allowed iff any grant applies.

    Grants are alternatives (OR); each grant's constraints are ANDed.
    """

    grants: tuple[Grant, ...]

    @property
    def allowed(self) -> bool:
        return bool(self.grants)

    @property
    def unrestricted(self) -> bool:
        return any(g.unrestricted for g in self.grants)

    @property
    def narrowing(self) -> list[list[tuple[str, str]]] | None:
        """Search parameters to AND in, one list per alternative; None if nothing narrows.

        Compartment confinement is not a search parameter here: see `patients`.
        """
        if not self.allowed or self.unrestricted:
            return None
        if any(not g.params for g in self.grants):
            return None
        return [list(g.params) for g in self.grants]

    @property
    def patients(self) -> frozenset[str] | None:
        """Patients whose compartment confines the access; None if not confined."""
        if not self.allowed or any(g.patient is None for g in self.grants):
            return None
        return frozenset(g.patient for g in self.grants if g.patient is not None)


DENIED = Access(())


def decide(
    scopes: Iterable[str | Scope],
    resource_type: str,
    interaction: str,
    patient: str | None,
) -> Access:
    """What `scopes` allow for `interaction` on `resource_type` with `patient` in context.

    `patient/` scopes count only when a patient is in context, and then confine to it.
    Unknown interactions are denied. Write permissions never imply read, nor read search.
    """
    letter = PERMISSION_OF.get(interaction)
    if letter is None:
        return DENIED
    grants: list[Grant] = []
    for item in scopes:
        scope = item if isinstance(item, Scope) else parse_scope(item)
        if scope is None or letter not in scope.permissions:
            continue
        if not scope.covers_type(resource_type):
            continue
        if scope.context == "patient":
            if not patient:
                continue
            grants.append(Grant(patient, scope.query))
        else:
            grants.append(Grant(None, scope.query))
    if any(g.unrestricted for g in grants):
        return Access((Grant(None, ()),))
    # Sorted, so that the same token always yields the same query (scopes arrive as a set).
    return Access(tuple(sorted(set(grants), key=lambda g: (g.patient or "", g.params))))


def readable_types(scopes: Iterable[str | Scope]) -> set[str] | None:
    """Types some scope lets us read or search; None means every type (`*`)."""
    types: set[str] = set()
    for item in scopes:
        scope = item if isinstance(item, Scope) else parse_scope(item)
        if scope is None or not scope.permissions & {"r", "s"}:
            continue
        if scope.resource_type == "*":
            return None
        types.add(scope.resource_type)
    return types


def narrow_scopes(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes that `allowed` covers: resource scopes by `Scope.covers`,
    other scopes (openid, launch, offline_access...) only if literally present."""
    allowed_list = list(allowed)
    allowed_parsed = parse_scopes(allowed_list)
    out: list[str] = []
    for text in requested:
        scope = parse_scope(text)
        if scope is None:
            if text in allowed_list:
                out.append(text)
        elif any(a.covers(scope) for a in allowed_parsed):
            out.append(text)
    return list(dict.fromkeys(out))
