"""A parsed search: what the repository runs (filter, joins, sort, includes, paging)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue

Doc = dict[str, Any]


@dataclass
class Clause:
    filter: Doc
    # Lower runs the index lookup first: SecantusDB serves a flat filter from the index of
    # its first indexed field, so the most selective field (a reference, an id) leads.
    priority: int = 5
    # True when only documents holding a value for the field can match. Tombstones hold no
    # `sp`, so such a clause already keeps deleted resources out without `del: false`.
    positive: bool = True


@dataclass
class Join:
    """A clause that needs another search first: a chain or a reverse chain (`_has`).

    chain: the references in `field` must point at a match of one of `queries` (one per
    target type). has: this type's ids are those referenced, through `field`, by a match of
    the single query in `queries`.
    """

    kind: str  # chain | has
    field: str
    queries: list[SearchQuery]


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str | None  # None: every reference parameter (`*`)
    target: str | None
    iterate: bool


@dataclass
class SearchQuery:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    joins: list[Join] = field(default_factory=list)
    # (field, direction); the repository appends _id as the tie-breaker for stable paging.
    sort: list[tuple[str, int]] = field(default_factory=lambda: [("ts", -1)])
    count: int = 50
    cursor: str | None = None
    total: str | None = None  # none | estimate | accurate; None: only when it costs nothing
    summary: str | None = None
    elements: tuple[str, ...] = ()
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    # The parameters that took part, for the Bundle's self link.
    used: list[tuple[str, str]] = field(default_factory=list)

    @property
    def filter(self) -> Doc:
        return build_filter(self.clauses)


def build_filter(clauses: list[Clause]) -> Doc:
    """ANDs clauses into one filter, flat where fields do not collide (planner-friendly)."""
    ordered = sorted(clauses, key=lambda c: c.priority)
    flat: Doc = {}
    rest: list[Doc] = []
    for clause in ordered:
        for key, value in clause.filter.items():
            if key.startswith("$"):
                rest.append({key: value})
            elif key not in flat:
                flat[key] = value
            elif _mergeable(flat[key], value):
                flat[key] = {**flat[key], **value}
            elif _both_nin(flat[key], value):
                # Not a, and not b: none of them, as one `$nin` (see clauses._token).
                flat[key] = {"$nin": [*flat[key]["$nin"], *value["$nin"]]}
            else:
                rest.append({key: value})
    if not any(c.positive and _on_sp(c.filter) for c in clauses):
        flat["del"] = False
    if rest:
        flat["$and"] = rest
    return flat


def _on_sp(filter: Doc) -> bool:
    """True when every field the clause tests is an extracted value, absent on tombstones
    (ts and compartments are kept on tombstones, so they never exclude them)."""
    for key, value in filter.items():
        if key == "$or" and isinstance(value, list):
            if not all(isinstance(v, dict) and _on_sp(v) for v in value):
                return False
        elif not key.startswith("sp."):
            return False
    return True


def _both_nin(a: Any, b: Any) -> bool:
    return (isinstance(a, dict) and isinstance(b, dict) and set(a) == {"$nin"} == set(b)
            and isinstance(a["$nin"], list) and isinstance(b["$nin"], list))


def _mergeable(a: Any, b: Any) -> bool:
    return (
        isinstance(a, dict) and isinstance(b, dict) and bool(a) and bool(b)
        and all(k.startswith("$") for k in (*a, *b)) and not set(a) & set(b)
    )
