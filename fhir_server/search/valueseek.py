"""Seek pagination over string, token and number sort keys: a page whose lookups match about
a page (docs/search.md, "Sorts on strings, tokens and numbers").

search.seek bounds a page sorted by a date: its windows are ranges of hours, placed by a
directory of the hours that hold data. A string, token or number has no such fixed axis, so
the directory here (storage.sort_values) holds *splitters*: values noted by a sample of the
writes (a hash of the resource id falls in 1/SAMPLE), each with how many resources it
stands for. The axis, in sort order, is then a series of items:

    (missing value) | (-inf, v1) | v1 | (v1, v2) | v2 | ... | vk | (vk, +inf)

A gap between two splitters holds about SAMPLE resources (fewer for a token, whose values
are all splitters); a splitter holds what was counted for it. Light items are read together
as one range of values, `{K: {$gte: low, $lt: high}}`, sized to about a page; a *heavy* value
(`status = requested`, 200,000 Tasks) is read as one equality `K = v` walked on `ts` windows
exactly as search.seek walks a date. So the tie-break inside a value is `ts`, then `_id`
(search.parser puts `ts` after a lone string, token or number sort key).

The directory is only a hint: the items tile the whole axis whatever it says, so a missing
splitter makes a page cost more (a wider range), never lose a match. Bounds are written as
`$gte`/`$lt` only, on an index ascending on K: SecantusDB 0.7 drops the documents equal to
an inclusive far-end bound (`$lte` on an ascending compound index whose K has fields after
it); an inclusive upper bound is written `$lt` the value's successor (`s + "\\0"` for a
string, the next float for a number), which is the same set of values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.search import seek

Doc = dict[str, Any]
Key = list[tuple[str, int]]

# One write in SAMPLE notes its value (by a hash of the resource id): consecutive splitters
# of a high-cardinality key lie about SAMPLE resources apart.
SAMPLE = 64
# What a gap between two splitters is expected to hold.
GAP = SAMPLE - 1
# A value standing for more than this (or four pages) is walked on `ts`, not read whole.
HEAVY = 64
# The tie-break that follows K (search.parser adds it).
TIE = "ts"


def sortable(value: Any) -> bool:
    """Whether a value can be a splitter: a string or a number (not a boolean)."""
    return isinstance(value, str) or (isinstance(value, int | float)
                                      and not isinstance(value, bool) and math.isfinite(value))


def successor(value: Any) -> Any:
    """The least value greater than `value` of its kind: `$lt` it is `$lte` value."""
    if isinstance(value, str):
        return value + "\x00"
    return math.nextafter(float(value), math.inf)


@dataclass(frozen=True)
class ValuePlan:
    field: str
    direction: int
    # One equality filter per value of a split `$in` (one, without `$in`).
    filters: list[Doc]
    # The equality fields of the index (served..., K, ts) that serves the windows, in order.
    served: tuple[str, ...]

    def query(self, flt: Doc, cond: Any) -> Doc:
        """A range's (or a light null group's) query: the served equalities and K."""
        return {**{n: flt[n] for n in self.served if n in flt}, self.field: cond}

    def residual(self, flt: Doc) -> Doc:
        return {k: v for k, v in flt.items() if k not in self.served}

    def point(self, flt: Doc, value: Any) -> tuple[Doc, seek.SeekPlan]:
        """The filter and the `ts` walk of one heavy value (or the heavy missing group)."""
        return {**flt, self.field: value}, seek.SeekPlan(
            TIE, self.direction, [], served=(*self.served, self.field))


def plan(resource_type: str, base: Doc, keys: Key,
         index_keys: Sequence[Sequence[tuple[str, int]]]) -> ValuePlan | None:
    """How to seek a page sorted by one string, token or number key K (keys are exactly
    K, ts, _id in one direction), or None where no index (equalities..., K ascending, ts)
    bounds its windows."""
    if len(keys) != 3 or keys[1][0] != TIE or keys[2][0] != "_id":
        return None
    field, direction = keys[0]
    if (not field.startswith("sp.") or field.endswith((".s", ".e"))
            or any(d != direction for _, d in keys) or field in base
            or field in seek.bucketed_fields(resource_type)):
        return None
    split = seek.equalities(base)
    if split is None:
        return None
    eq, in_ = split
    fields = set(eq) | ({in_[0]} if in_ else set())
    served = _served(fields, field, index_keys)
    if served is None:
        return None
    filters = [eq] if in_ is None else [{**eq, in_[0]: v} for v in dict.fromkeys(in_[1])]
    return ValuePlan(field, direction, filters, served)


def _served(fields: set[str], field: str, index_keys: Sequence[Sequence[tuple[str, int]]]
            ) -> tuple[str, ...] | None:
    """The equality prefix of an index (prefix..., K ascending, ts, ...) whose prefix the
    filter's equalities hold, leaving out at most `del` (false on all but tombstones)."""
    best: tuple[str, ...] | None = None
    for key in index_keys:
        names = [k for k, _ in key]
        if field not in names:
            continue
        at = names.index(field)
        if key[at][1] != 1 or at + 1 >= len(names) or names[at + 1] != TIE:
            continue
        prefix = tuple(names[:at])
        if set(prefix) <= fields and fields - set(prefix) <= {"del"} and (
                best is None or len(prefix) > len(best)):
            best = prefix
    return best


def index_fields(index_keys: Mapping[str, Sequence[Sequence[tuple[str, int]]]]
                 ) -> dict[str, tuple[str, ...]]:
    """Per type, the keys K some index (..., K, ts) could seek: the splitters to note."""
    out: dict[str, tuple[str, ...]] = {}
    for rtype, keys in index_keys.items():
        found: list[str] = []
        for key in keys:
            names = [k for k, _ in key]
            for at, name in enumerate(names[:-1]):
                if (names[at + 1] == TIE and key[at][1] == 1 and name.startswith("sp.")
                        and not name.endswith((".s", ".e")) and name not in found):
                    found.append(name)
        if found:
            out[rtype] = tuple(found)
    return out


@dataclass(frozen=True)
class Step:
    """One read of the walk: `heavy` reads the equality K = `value` (None: the missing
    group) on `ts` windows; otherwise `cond` is the condition on K of one query."""
    cond: Any = None
    heavy: bool = False
    value: Any = None
    # The cursor lies inside this value: its `ts` walk starts at the cursor's `ts`.
    at_cursor: bool = False


@dataclass
class _Item:
    kind: str  # "gap", "point" or "null"
    low: Any  # [low, high) in value order; None is open
    high: Any
    estimate: float
    value: Any = None
    at_cursor: bool = False


class ValueWalk:
    """The items of the axis in sort order from the cursor on, handed out as steps sized to
    what the page still wants (see the module docstring)."""

    def __init__(self, direction: int, splitters: Sequence[tuple[Any, float]], missing: float,
                 cursor: list[Any] | None) -> None:
        values = sorted((v, n) for v, n in splitters if sortable(v))
        kinds = {type(v) is str for v, _ in values}
        if len(kinds) > 1:  # strings and numbers in one key: no order to place them by
            values = []
        items: list[_Item] = []
        previous: Any = None
        for i, (value, count) in enumerate(values):
            items.append(_Item("gap", successor(previous) if i else None, value, GAP))
            items.append(_Item("point", value, successor(value), count, value))
            previous = value
        items.append(_Item("gap", successor(previous) if values else None, None, GAP))
        null = _Item("null", None, None, missing)
        # Missing values sort first ascending, last descending (as MongoDB sorts them).
        self.items = [null, *items] if direction > 0 else [*reversed(items), null]
        self.direction = direction
        self.position = 0
        if cursor is not None:
            self._start_at(cursor[0])

    def _start_at(self, value: Any) -> None:
        """Skips the items before the cursor's value; clips the one holding it."""
        for i, item in enumerate(self.items):
            if value is None:
                hit = item.kind == "null"
            elif item.kind == "null" or not sortable(value) or not _comparable(item, value):
                hit = False
            else:
                hit = ((item.low is None or item.low <= value)
                       and (item.high is None or value < item.high))
            if hit:
                self.position = i
                item.at_cursor = True
                if item.kind == "gap":  # from the cursor's value on (its ties dropped later)
                    if self.direction > 0:
                        item.low = value
                    else:
                        item.high = successor(value)
                return
        # A value of another kind than the splitters: read everything after it in one go
        # (the caller drops what comes before the cursor).
        self.position = 0

    def next(self, need: int) -> Step | None:
        """The next read, for a page that still wants `need`; None past the axis's end."""
        if self.position >= len(self.items):
            return None
        item = self.items[self.position]
        if item.kind == "null" or (item.kind == "point" and _heavy(item, need)):
            self.position += 1
            # A light missing group is one query: K = null (cond None).
            return Step(heavy=_heavy(item, need) or item.kind == "point", value=item.value,
                        at_cursor=item.at_cursor)
        # Light items read together, in sort order, until they should hold the page.
        group = [item]
        self.position += 1
        total = item.estimate
        while self.position < len(self.items) and total < 1.5 * need:
            nxt = self.items[self.position]
            if nxt.kind == "null" or (nxt.kind == "point" and _heavy(nxt, need)):
                break
            group.append(nxt)
            total += nxt.estimate
            self.position += 1
        first, last = (group[0], group[-1]) if self.direction > 0 else (group[-1], group[0])
        cond: Doc = {}
        if first.low is not None:
            cond["$gte"] = first.low
        if last.high is not None:
            cond["$lt"] = last.high
        return Step(cond=cond or {"$ne": None})


def _heavy(item: _Item, need: int) -> bool:
    return item.estimate > max(HEAVY, 4 * need)


def _comparable(item: _Item, value: Any) -> bool:
    bound = item.low if item.low is not None else item.high
    return bound is None or (type(bound) is str) == (type(value) is str)


def values_at(doc: Doc, dotted: str) -> list[Any]:
    """The values at `dotted` in a stored document (a list at any step is walked)."""
    nodes: list[Any] = [doc]
    for part in dotted.split("."):
        nodes = [n.get(part) for n in nodes if isinstance(n, dict)]
        nodes = [x for n in nodes for x in (n if isinstance(n, list) else [n])]
    return nodes
