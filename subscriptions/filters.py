"""The search engine's MongoDB filters, evaluated in memory against one stored document.

Criteria matching has "the same semantics as search" because it runs the very filter the
search engine builds (`SearchEngine.parse(...).filter`) against the `sp` values the repository
stored for the new version, with MongoDB's own rules: a path through an array matches if any
element does, each condition on a field may be met by a different element, `{f: None}` also
matches a missing field, and values of different BSON types never compare.

Only the operators the search engine emits are known; any other raises `Unsupported`, and the
caller falls back to asking the database.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

Doc = dict[str, Any]
_MISSING = object()


class Unsupported(Exception):
    """The filter uses an operator this evaluator does not know."""


def matches(flt: Doc, doc: Doc) -> bool:
    for key, cond in flt.items():
        if key == "$and":
            if not all(matches(f, doc) for f in cond):
                return False
        elif key == "$or":
            if not any(matches(f, doc) for f in cond):
                return False
        elif key == "$nor":
            if any(matches(f, doc) for f in cond):
                return False
        elif key.startswith("$"):
            raise Unsupported(key)
        elif not _field_matches(_resolve(doc, key), cond):
            return False
    return True


def _resolve(node: Any, path: str) -> list[Any]:
    """Every value at `path`, arrays traversed; an array at the end is kept and expanded."""
    values = [node]
    for part in path.split("."):
        nxt: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                if part in value:
                    nxt.append(value[part])
            elif isinstance(value, list):
                nxt.extend(item[part] for item in value if isinstance(item, dict) and part in item)
        values = nxt
    out: list[Any] = []
    for value in values:
        out.append(value)
        if isinstance(value, list):
            out.extend(value)
    return out


def _is_operator_doc(cond: Any) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(k.startswith("$") for k in cond)


def _field_matches(values: list[Any], cond: Any) -> bool:
    if not _is_operator_doc(cond):
        return _equals_any(values, cond)
    return all(_operator(op, arg, values) for op, arg in cond.items())


def _operator(op: str, arg: Any, values: list[Any]) -> bool:
    if op == "$eq":
        return _equals_any(values, arg)
    if op == "$ne":
        return not _equals_any(values, arg)
    if op == "$in":
        return any(_equals_any(values, a) for a in arg)
    if op == "$nin":
        return not any(_equals_any(values, a) for a in arg)
    if op == "$exists":
        return bool(values) == bool(arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return any(_compare(op, v, arg) for v in values if not isinstance(v, list))
    if op == "$regex":
        pattern = _regex(arg)
        return any(isinstance(v, str) and pattern.search(v) is not None for v in values)
    raise Unsupported(op)


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "date":
        return bool(a.timestamp() == b.timestamp())
    return bool(a == b)


def _equals_any(values: list[Any], target: Any) -> bool:
    if target is None and not values:
        return True  # {f: null} matches a missing field
    return any(_same(v, target) for v in values)


def _compare(op: str, value: Any, bound: Any) -> bool:
    kind = _kind(value)
    if kind != _kind(bound) or kind not in ("number", "string", "date", "bool"):
        return False
    if kind == "date":
        value, bound = value.timestamp(), bound.timestamp()
    if op == "$gt":
        return bool(value > bound)
    if op == "$gte":
        return bool(value >= bound)
    if op == "$lt":
        return bool(value < bound)
    return bool(value <= bound)


def equality_keys(flt: Doc) -> tuple[str, list[Any]] | None:
    """A top-level field every match must hold one of these plain values in (for indexing)."""
    for key, cond in flt.items():
        if key.startswith("$"):
            continue
        if isinstance(cond, str):
            return key, [cond]
        if isinstance(cond, dict) and set(cond) == {"$in"} and all(isinstance(c, str) for c in cond["$in"]):
            return key, list(cond["$in"])
    return None


def values_at(doc: Doc, path: str) -> list[Any]:
    return _resolve(doc, path)
