"""Keyset paging on any sort: which documents come after a page's last sort key.

The exact "after (k1, k2, ..., _id)" filter is an `$or` of prefixes, which SecantusDB's
planner cannot serve from an index (any top-level operator means a collection scan). So the
database gets a range on the first sort key only (`$gte`/`$lte` the cursor's value, or the
null group), and the few documents that tie on it and were already served are dropped here.
Missing values sort first ascending and last descending, as MongoDB sorts them; a field with
several values sorts by its smallest (ascending) or largest (descending) one, as MongoDB does.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from fhir_server.search.query import Doc

UNIQUE = ("_id",)
NEVER_NULL = frozenset({"_id", "ts"})


def sort_keys(sort: list[tuple[str, int]]) -> list[tuple[str, int]]:
    keys = [k for k in sort if k[0] != "_id"]
    tie = next((d for f, d in sort if f == "_id"), keys[-1][1] if keys else -1)
    return [*keys, ("_id", tie)]


def value_of(doc: Doc, field: str, direction: int) -> Any:
    node: Any = doc
    parts = field.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list):
            rest = ".".join(parts[i:])
            values = [v for item in node if (v := value_of(item, rest, direction)) is not None]
            return (min(values) if direction > 0 else max(values)) if values else None
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    if isinstance(node, list):
        values = [v for v in node if v is not None and not isinstance(v, dict | list)]
        return (min(values) if direction > 0 else max(values)) if values else None
    return node


def cursor_of(doc: Doc, keys: list[tuple[str, int]]) -> list[Any]:
    return [value_of(doc, f, d) for f, d in keys]


def _compare(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    if isinstance(a, datetime) and isinstance(b, datetime):
        a, b = a.timestamp(), b.timestamp()
    try:
        return int(a > b) - int(a < b)
    except TypeError:
        return (str(a) > str(b)) - (str(a) < str(b))


def is_after(doc: Doc, keys: list[tuple[str, int]], cursor: list[Any]) -> bool:
    for (field, direction), last in zip(keys, cursor, strict=True):
        order = _compare(value_of(doc, field, direction), last) * direction
        if order:
            return order > 0
    return False


def compare_docs(a: Doc, b: Doc, keys: list[tuple[str, int]]) -> int:
    """-1, 0 or 1: whether `a` comes before `b` in `keys` order."""
    for field, direction in keys:
        order = _compare(value_of(a, field, direction), value_of(b, field, direction)) * direction
        if order:
            return order
    return 0


def phases(keys: list[tuple[str, int]], cursor: list[Any] | None) -> list[Doc]:
    """Filters on the first sort key, in order, that together cover every later document."""
    if cursor is None:
        return [{}]
    field, direction = keys[0]
    first = cursor[0]
    if field in NEVER_NULL:
        return [{field: _from(first, direction)}]
    if first is None:
        return [{field: None}, {field: {"$ne": None}}] if direction > 0 else [{field: None}]
    if direction > 0:
        return [{field: _from(first, direction)}]
    return [{field: _from(first, direction)}, {field: None}]


MS = timedelta(milliseconds=1)


def _from(value: Any, direction: int) -> Doc:
    """`>= value` (ascending) or `<= value` (descending), written with an exclusive bound
    where the kind of value has a neighbour: SecantusDB 0.7 drops the documents equal to an
    inclusive bound at the far end of a compound index whose range field has more fields
    after it (`$lte` on an ascending one; found with `Task?owner=x&_sort=-status`, whose
    index is (owner, status, ts)). The same documents on any database."""
    if isinstance(value, datetime):
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)  # BSON's ms
        return {"$gt": value - MS} if direction > 0 else {"$lt": value + MS}
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return {"$gt" if direction > 0 else "$lt": math.nextafter(
            float(value), -math.inf if direction > 0 else math.inf)}
    if isinstance(value, str) and direction < 0:
        return {"$lt": value + "\x00"}  # the least string after it
    # An ascending string: `$gte` is the near end of the ascending indexes sort keys have.
    return {"$gte" if direction > 0 else "$lte": value}


def merge(a: Doc, b: Doc) -> Doc:
    """a AND b, keeping the result flat where the fields allow (see search.query)."""
    if not b:
        return a
    if not a:
        return b
    out = dict(a)
    for key, value in b.items():
        if key == "$and":
            out["$and"] = [*out.get("$and", []), *value]
        elif key not in out:
            out[key] = value
        elif not key.startswith("$") and (merged := _same_field(out[key], value)) is not None:
            out[key] = merged
        else:
            out["$and"] = [*out.get("$and", []), {key: value}]
    return out


def _operators(value: Any) -> Doc | None:
    """A field condition as an operator document: `v` is `{"$eq": v}` (same meaning, also on
    array fields); None for an embedded-document value, which cannot be merged."""
    if isinstance(value, dict):
        return value if value and all(k.startswith("$") for k in value) else None
    return {"$eq": value}


def _same_field(a: Any, b: Any) -> Doc | None:
    """Two conditions on one field as one operator document, when their operators differ.

    SecantusDB plans a flat filter from its indexes but scans the collection for `$and`, so
    {"f": "p1"} AND {"f": {"$nin": [...]}} must become {"f": {"$eq": "p1", "$nin": [...]}}."""
    left, right = _operators(a), _operators(b)
    if left is None or right is None or set(left) & set(right):
        return None
    return {**left, **right}
