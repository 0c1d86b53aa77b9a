"""A query string -> SearchQuery: parameters, chains, `_has`, and the result parameters."""

from __future__ import annotations

from fhir_server.config import Settings
from fhir_server.elements import check_summary
from fhir_server.errors import BadRequest, Issue
from fhir_server.resource_types import STORED
from fhir_server.search.clauses import ClauseBuilder
from fhir_server.search.query import Include, Join, SearchQuery
from fhir_server.search.registry import Registry, SearchParam

# Parameters that shape the result (or the response) rather than select resources.
IGNORED = frozenset({"_format", "_pretty", "_type"})
REFUSED = frozenset({"_text", "_content", "_list", "_query", "_filter", "_containedType",
                     "_contained"})
SPECIAL = {
    "_id": SearchParam("_id", "Resource", "token", "http://hl7.org/fhir/SearchParameter/Resource-id",
                       "Logical id of this artifact"),
    "_lastUpdated": SearchParam(
        "_lastUpdated", "Resource", "date",
        "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        "When the resource version last changed"),
}
MAX_CHAIN_DEPTH = 4


class Parser:
    def __init__(self, settings: Settings, registry: Registry, clauses: ClauseBuilder) -> None:
        self.settings = settings
        self.registry = registry
        self.clauses = clauses

    def param(self, resource_type: str, code: str) -> SearchParam | None:
        return SPECIAL.get(code) or self.registry.get(resource_type, code)

    def parse(
        self, resource_type: str, params: list[tuple[str, str]], *, strict: bool = False,
        depth: int = 0,
    ) -> SearchQuery:
        query = SearchQuery(resource_type, count=self.settings.default_page_size)
        for name, value in params:
            if name == "_cursor":
                query.cursor = value
                continue
            if name in IGNORED:
                continue
            if self._result_parameter(query, name, value):
                query.used.append((name, value))
                continue
            if name in REFUSED:
                raise BadRequest(f"Search parameter '{name}' is not supported by this server",
                                 code="not-supported")
            if value == "":
                continue  # FHIR: a parameter without a value is ignored
            if name.startswith("_has:"):
                query.joins.append(self._has(resource_type, name, value, strict, depth))
                query.used.append((name, value))
                continue
            head, dot, rest = name.partition(".")
            code, _, modifier = head.partition(":")
            param = self.param(resource_type, code)
            if param is None:
                self._unknown(query, name, strict)
                continue
            if dot:
                query.joins.append(
                    self._chain(param, modifier or None, rest, value, strict, depth))
            else:
                query.clauses.append(self.clauses.build(param, modifier or None, value))
            query.used.append((name, value))
        if query.summary == "count":
            query.count = 0
        elif query.count == 0 and any(name == "_count" for name, _ in params):
            # search.html: _count=0 SHALL be treated as _summary=count (the total, no entries).
            query.summary = "count"
            query.total = "accurate"
        return query

    def _unknown(self, query: SearchQuery, name: str, strict: bool) -> None:
        message = f"Unknown search parameter '{name[:100]}' for {query.resource_type}"
        if strict:
            raise BadRequest(message, code="not-supported")
        query.warnings.append(Issue("warning", "not-supported", message + " was ignored"))

    def _chain(
        self, param: SearchParam, type_modifier: str | None, rest: str, value: str, strict: bool,
        depth: int,
    ) -> Join:
        if param.type != "reference":
            raise BadRequest(f"'{param.code}' is not a reference parameter and cannot be chained",
                             code="invalid")
        if depth >= MAX_CHAIN_DEPTH:
            raise BadRequest("Chains are limited to 4 levels", code="too-costly")
        if type_modifier:
            if type_modifier not in STORED:
                raise BadRequest(f"'{type_modifier[:40]}' is not a resource type this server "
                                 "stores", code="not-supported")
            targets = [type_modifier]
        else:
            targets = [t for t in param.target_types() if t in STORED]
        # Only target types that know the chained parameter take part.
        chained = rest.partition(".")[0].partition(":")[0]
        targets = [t for t in targets if self.param(t, chained) is not None]
        if not targets:
            raise BadRequest(f"Chained parameter '{rest[:60]}' is not known on the targets of "
                             f"'{param.code}'", code="not-supported")
        queries = [self.parse(t, [(rest, value)], strict=True, depth=depth + 1) for t in targets]
        return Join("chain", param.field, queries)

    def _has(self, resource_type: str, name: str, value: str, strict: bool, depth: int) -> Join:
        parts = name.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise BadRequest(f"'{name[:80]}' is not of the form _has:Type:reference:parameter",
                             code="invalid")
        _, other, ref_code, rest = parts
        if other not in STORED:
            raise BadRequest(f"_has: '{other[:40]}' is not a resource type this server stores",
                             code="not-supported")
        ref = self.registry.get(other, ref_code)
        if ref is None or ref.type != "reference":
            raise BadRequest(f"_has: '{ref_code[:40]}' is not a reference parameter of {other}",
                             code="not-supported")
        if depth >= MAX_CHAIN_DEPTH:
            raise BadRequest("_has is limited to 4 levels", code="too-costly")
        sub = self.parse(other, [(rest, value)], strict=True, depth=depth + 1)
        return Join("has", ref.field, [sub])

    # ------------------------------------------------------------------ result parameters

    def _result_parameter(self, query: SearchQuery, name: str, value: str) -> bool:
        if name == "_count":
            query.count = self._count(value)
        elif name == "_sort":
            query.sort = self._sort(query.resource_type, value)
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise BadRequest("_total must be none, estimate or accurate", code="value")
            query.total = value
        elif name == "_summary":
            query.summary = check_summary(value)
            if query.summary == "count":
                query.total = "accurate"
        elif name == "_elements":
            query.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name in ("_include", "_include:iterate", "_revinclude", "_revinclude:iterate"):
            reverse = name.startswith("_revinclude")
            include = self._include(query.resource_type, value, name.endswith(":iterate"), reverse)
            (query.revincludes if reverse else query.includes).append(include)
        else:
            return False
        return True

    def _count(self, value: str) -> int:
        try:
            count = int(value)
        except ValueError:
            raise BadRequest(f"_count must be a whole number, not '{value[:50]}'",
                             code="value") from None
        if count < 0:
            raise BadRequest("_count must not be negative", code="value")
        return min(count, self.settings.max_page_size)

    def _sort(self, resource_type: str, value: str) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        undated = False
        for item in value.split(","):
            item = item.strip()
            direction = -1 if item.startswith("-") else 1
            code = item.lstrip("-")
            if code == "_id":
                keys.append(("_id", direction))
                continue
            if code == "_lastUpdated":
                keys.append(("ts", direction))
                continue
            param = self.registry.get(resource_type, code)
            if param is None or param.type == "composite":
                raise BadRequest(f"_sort: '{code[:60]}' is not a sortable parameter of "
                                 f"{resource_type}", code="not-supported")
            suffix = {"date": ".s", "quantity": ".v"}.get(param.type, "")
            keys.append((param.field + suffix, direction))
            undated = param.type != "date"
        if not keys:
            raise BadRequest("_sort needs at least one parameter", code="value")
        if len(keys) == 1 and keys[0][0] not in ("_id", "ts") and undated:
            # Ties on a lone string, token or number key are ordered by `ts` (then `_id`), in
            # the key's direction: a heavy value is then read on `ts` windows
            # (search.valueseek). FHIR leaves the order of ties open.
            keys.append(("ts", direction))
        return keys

    def _include(self, resource_type: str, value: str, iterate: bool, reverse: bool) -> Include:
        if value == "*":
            return Include("*", None, None, iterate)
        parts = value.split(":")
        if len(parts) not in (2, 3) or parts[0] not in STORED:
            raise BadRequest(f"'{value[:80]}' is not of the form Type:parameter[:targetType]",
                             code="value")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if target is not None and not (target.isalpha() and target[:1].isupper()):
            raise BadRequest(f"'{target[:40]}' is not a resource type", code="value")
        if code != "*":
            param = self.registry.get(source, code)
            if param is None or param.type != "reference":
                raise BadRequest(f"'{code[:60]}' is not a reference parameter of {source}",
                                 code="not-supported")
        if not reverse and not iterate and source != resource_type:
            raise BadRequest(f"_include={value[:80]} does not start from {resource_type} "
                             "(use _include:iterate)", code="value")
        return Include(source, None if code == "*" else code, target, iterate)
