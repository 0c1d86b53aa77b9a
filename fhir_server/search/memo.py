"""Search values remembered by what a parameter's paths find in a resource.

The server writes an AuditEvent for every request, and most of its search values repeat
from one to the next: the same client's agent and source, the same type, subtype, action
and outcome; only the time, the meta, the request id and, per resource, the entity change.
A parameter's values are a function of what its branches find (`Extractor.values`, with
each branch's `resolve() is` type) and nothing else, so they are extracted once per distinct
finding, then looked up by its JSON: `_tag` finds nothing in a meta whose lastUpdated
changed, `entity-type` the same codings whatever the request id. A reference parameter
(`entity`, `patient`: they find the request id's identifier beside the references) is
remembered value by value. The answer is the same as `Extractor.extract`'s
(tests/search/test_memo.py compares them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.search.extract import Extractor
from fhir_server.search.registry import SearchParam

Doc = dict[str, Any]
Parts = tuple[str | None, Doc | None]
# Resource types the server writes at every request: worth a lookup per parameter.
MEMOIZED = frozenset({"AuditEvent"})
MAX_ENTRIES = 4096  # per parameter; emptied when full (a new client's events refill it)


def _copy(value: Any) -> Any:
    # The stored document gets its own lists and ranges; the remembered ones stay as made.
    if isinstance(value, list):
        return [dict(v) if isinstance(v, dict) else v for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


class MemoExtractor:
    def __init__(self, extractor: Extractor, params: Iterable[SearchParam]) -> None:
        self.extractor = extractor
        self.plan = [p for p in params if p.branches and p.code not in ("_id", "_lastUpdated")]
        self._memo: dict[str, dict[bytes, Doc]] = {p.code: {} for p in self.plan}
        self._parts: dict[str, dict[bytes, Parts]] = {p.code: {} for p in self.plan}
        self.hits = 0  # for tests and the bench

    def extract(self, resource: Doc) -> Doc:
        out: Doc = {}
        for param in self.plan:
            try:
                values = self.extractor.values(param, resource)
                if param.type == "reference":
                    self._references(out, param, values)
                    continue
                key = orjson.dumps(values)
            except Exception:  # what a plain extraction skips or stops at, it does here too
                self.extractor.extract((param,), resource, out)
                continue
            if not values:
                continue  # nothing found: no values
            memo = self._memo[param.code]
            part = memo.get(key)
            if part is None:
                part = self.extractor.extract((param,), resource)
                if len(memo) >= MAX_ENTRIES:
                    memo.clear()
                memo[key] = part
            else:
                self.hits += 1
            for k, v in part.items():
                out[k] = _copy(v)
        return out

    def _references(self, out: Doc, param: SearchParam, values: list[tuple[Any, str | None]]) -> None:
        memo = self._parts[param.code]
        parts: list[Parts] = []
        for value, is_type in values:
            key = orjson.dumps([value, is_type])
            found = memo.get(key)
            if found is None:
                found = self.extractor.reference_parts(value, is_type)
                if len(memo) >= MAX_ENTRIES:
                    memo.clear()
                memo[key] = found
            else:
                self.hits += 1
            parts.append(found)
        if parts:
            self.extractor.put_references(out, param.code, parts)
