"""Search values remembered by the parts of a resource they are extracted from.

The server writes an AuditEvent for every request, and most of its search values repeat
from one to the next: the same client's agent and source, the same type, subtype, action
and outcome; only the time and, per resource, the entity change. A parameter whose every
branch is a plain dotted path depends only on the top-level elements those paths start at,
so its values are a function of those elements' JSON: extracted once, then looked up by it.
A parameter over a list that changes a little from one event to the next (`entity`: the
resource and patient repeat, the request id does not) misses that memo; its raw values are
then gathered element by element, each element's looked up by its JSON (a dotted path's
values over a list are its values over each element, in order), and only the typing of
those values is done again.
The answer is the same as `Extractor.extract`'s (tests/search/test_memo.py compares them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.search.extract import Extractor
from fhir_server.search.registry import Branch, SearchParam

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
        # Raw values of one branch in one element of its root, by the element's JSON.
        self._elements: dict[int, dict[bytes, list[Any]]] = {}
        self.hits = 0  # for tests and the bench
        self.element_hits = 0

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
                part = self._by_element(param, resource)
                if len(memo) >= MAX_ENTRIES:
                    memo.clear()
                memo[key] = part
            else:
                self.hits += 1
            for k, v in part.items():
                out[k] = _copy(v)
        return out

    def _by_element(self, param: SearchParam, resource: Doc) -> Doc:
        """`Extractor.extract((param,), resource)`, its branches evaluated per element."""
        values: list[tuple[Any, str | None]] = []
        for branch in param.branches:
            values.extend((v, branch.is_type) for v in self._branch_values(branch, resource))
        part: Doc = {}
        if values:
            try:
                self.extractor._one(part, param, resource, values)
            except Exception:  # as Extractor.extract: the parameter stops where it failed
                return part
        return part

    def _branch_values(self, branch: Branch, resource: Doc) -> list[Any]:
        root = branch.root
        assert root is not None  # only branches with a root are planned here (roots())
        node = resource.get(root)
        if node is None:
            return []
        memo = self._elements.setdefault(id(branch), {})
        out: list[Any] = []
        for element in node if isinstance(node, list) else [node]:
            key = orjson.dumps(element)
            found = memo.get(key)
            if found is None:
                found = branch.evaluate({"resourceType": resource.get("resourceType"), root: [element]})
                if len(memo) >= MAX_ENTRIES:
                    memo.clear()
                memo[key] = found
            else:
                self.element_hits += 1
            out.extend(found)
        return out
