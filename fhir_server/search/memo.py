"""Search values remembered by the parts of a resource they are extracted from.

The server writes an AuditEvent for every request, and most of its search values repeat
from one to the next: the same client's agent and source, the same type, subtype, action
and outcome; only the time and, per resource, the entity change. A parameter whose every
branch is a plain dotted path depends only on the top-level elements those paths start at,
so its values are a function of those elements' JSON: extracted once, then looked up by it.
The answer is the same as `Extractor.extract`'s (tests/search/test_memo.py compares them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.search.extract import Extractor
from fhir_server.search.registry import SearchParam

Doc = dict[str, Any]
# Resource types the server writes at every request: worth a lookup per parameter.
MEMOIZED = frozenset({"AuditEvent"})
MAX_ENTRIES = 4096  # per parameter; emptied when full (a new client's events refill it)


def roots(param: SearchParam) -> tuple[str, ...] | None:
    """The top-level elements `param`'s values depend on; None: not known (not memoized)."""
    found: list[str] = []
    for branch in param.branches:
        if branch.root is None:
            return None
        found.append(branch.root)
    return tuple(dict.fromkeys(found))


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
        self.plan = [(p, roots(p)) for p in params
                     if p.branches and p.code not in ("_id", "_lastUpdated")]
        self._memo: dict[str, dict[bytes, Doc]] = {p.code: {} for p, _ in self.plan}
        self.hits = 0  # for tests and the bench

    def extract(self, resource: Doc) -> Doc:
        out: Doc = {}
        for param, depends_on in self.plan:
            if depends_on is None:
                self.extractor.extract((param,), resource, out)
                continue
            try:
                key = orjson.dumps([resource.get(r) for r in depends_on])
            except TypeError:  # not JSON (cannot happen for a parsed resource): no memo
                self.extractor.extract((param,), resource, out)
                continue
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
