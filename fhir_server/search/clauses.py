"""One search parameter with its modifier and value -> a MongoDB filter clause.

Every value from the query string lands in the filter as a typed *value* (string, number,
datetime), never as a key or an operator; regular expressions are built only from
`re.escape`d text. Names of fields come from the registry, never from the request.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.datetimes import shifted
from fhir_server.errors import BadRequest
from fhir_server.resource_types import STORED
from fhir_server.search.extract import Extractor
from fhir_server.search.query import Clause
from fhir_server.search.registry import Registry, SearchParam
from fhir_server.search.values import (
    MAX_DATE,
    date_range,
    fold,
    parse_number,
    prefix_upper,
    split_prefix,
    split_unescaped,
    unescape,
)

Doc = dict[str, Any]

MODIFIERS = {
    "token": {"not", "text", "of-type", "missing", "in", "not-in"},
    "string": {"exact", "contains", "missing"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}


def _any(field: str, values: list[Any]) -> Doc:
    return {field: values[0]} if len(values) == 1 else {field: {"$in": values}}


def _or(filters: list[Doc]) -> Doc:
    return filters[0] if len(filters) == 1 else {"$or": filters}


def _prefix_range(prefix: str) -> Doc:
    return {"$gte": prefix, "$lt": prefix_upper(prefix)}


class ClauseBuilder:
    def __init__(self, registry: Registry, extractor: Extractor) -> None:
        self.registry = registry
        self.extractor = extractor

    def build(self, param: SearchParam, modifier: str | None, value: str) -> Clause:
        name = param.code + (f":{modifier}" if modifier else "")
        if modifier == "missing":
            if value not in ("true", "false"):
                raise BadRequest(f"{name} takes true or false, not '{value[:40]}'", code="value")
            field = "_id" if param.code == "_id" else param.field
            present: Any = {"$exists": value == "false"}
            if value == "true" and field.startswith("sp."):
                # A null equality, not `$exists: false`: SecantusDB 0.7 evaluates the second
                # document by document on a slow path (12 s for 100,000 Tasks, against
                # 0.01 s); they match the same documents, because an extracted value is
                # never stored as null (extract._put drops None).
                present = None
            # The null equality goes before the token criteria: SecantusDB looks a filter up
            # by the first field an index leads with (`owner:missing=true&status=x` by the
            # owner index, not by every Task of status x: 0.008 s against 14 s at 100,000).
            if param.type == "reference":  # a reference by identifier only is not missing
                ident = {f"{field}:identifier": present}
                if value == "true":
                    return Clause({field: present, **ident}, 6 if present else 2, positive=False)
                return Clause({"$or": [{field: present}, ident]}, 6)
            return Clause({field: present}, 6 if present else 2, positive=value == "false")
        alternatives = split_unescaped(value, ",")
        kind = param.type
        if param.code == "_id":
            return self._id(alternatives, modifier, name)
        if param.code == "_lastUpdated":
            # ts is on tombstones too: not "positive", so `del: false` is added.
            return Clause(_or([self._date(name, "ts", a, point=True) for a in alternatives]), 4,
                          positive=False)
        if modifier is not None and modifier not in MODIFIERS.get(kind, set()) and not (
            kind == "reference" and (modifier in STORED or modifier[:1].isupper())
        ):
            raise BadRequest(f"Modifier ':{modifier[:40]}' is not supported on {kind} parameter "
                             f"'{param.code}'", code="not-supported")
        if kind == "token":
            return self._token(param, modifier, alternatives, name)
        if kind == "string":
            return self._string(param, modifier, alternatives)
        if kind == "reference":
            return self._reference(param, modifier, alternatives)
        if kind == "date":
            return _ranged(_or([self._date(name, param.field, a) for a in alternatives]))
        if kind == "number":
            return _ranged(_or([self._number(name, param.field, a) for a in alternatives]))
        if kind == "quantity":
            return _ranged(_or([self._quantity(name, param.field, a) for a in alternatives]))
        if kind == "uri":
            return self._uri(param, modifier, alternatives)
        if kind == "composite" and param.searchable:
            return self._composite(param, alternatives)
        raise BadRequest(f"Parameter '{param.code}' of type {kind} is not supported"
                         + (" (a date, number or quantity component)" if kind == "composite" else ""),
                         code="not-supported")

    # ------------------------------------------------------------------ token

    def _id(self, alternatives: list[str], modifier: str | None, name: str) -> Clause:
        ids = [unescape(a) for a in alternatives]
        if modifier == "not":
            return Clause({"_id": {"$nin": ids}}, 6, positive=False)
        if modifier is not None:
            raise BadRequest(f"Modifier on '{name}' is not supported", code="not-supported")
        return Clause(_any("_id", ids), 0, positive=False)

    def _token(self, param: SearchParam, modifier: str | None, alts: list[str], name: str) -> Clause:
        field = param.field
        if modifier == "text":
            texts = [fold(unescape(a)) for a in alts]
            return Clause(_or([{f"{field}:text": _prefix_range(t)} for t in texts]), 3)
        if modifier == "of-type":
            values = []
            for alt in alts:
                parts = [unescape(p) for p in split_unescaped(alt, "|")]
                if len(parts) != 3 or not all(parts[1:]):
                    raise BadRequest(f"{name} takes system|code|value", code="value")
                values.append("|".join(parts))
            return Clause(_any(f"{field}:type", values), 1)
        if modifier in ("in", "not-in"):
            members: list[str] = []
            for alt in alts:
                url = unescape(alt)
                if url not in self.registry.valuesets:
                    raise BadRequest(f"ValueSet '{url[:200]}' for {name} is not known to this "
                                     "server", code="not-found")
                members.extend(self.registry.valuesets[url])
            codes = sorted({m.split("|", 1)[1] for m in members})
            positive = {"$or": [{f"{field}|": {"$in": members}},
                                {field: {"$in": codes}, f"{field}|": {"$exists": False}}]}
            if modifier == "in":
                return Clause(positive, 3)
            return Clause({"$nor": [positive]}, 6, positive=False)
        plain: list[str] = []
        others: list[Doc] = []
        for alt in alts:
            parts = split_unescaped(alt, "|")
            if len(parts) == 1:
                plain.append(unescape(parts[0]))
                continue
            if len(parts) > 2:
                raise BadRequest(f"'{alt[:60]}' is not a token (system|code) for {name}",
                                 code="value")
            system, code = unescape(parts[0]), unescape(parts[1])
            if system and code:
                others.append({f"{field}|": f"{system}|{code}"})
            elif code:  # |code: no system
                others.append({"$or": [{f"{field}|": f"|{code}"},
                                       {field: code, f"{field}|": {"$exists": False}}]})
            elif system:  # system|: any code from the system
                others.append({f"{field}|": _prefix_range(f"{system}|")})
        filters = ([_any(field, plain)] if plain else []) + others
        if not filters:
            raise BadRequest(f"{name} needs a value", code="value")
        clause = _or(filters)
        if modifier == "not":
            # NOT (any of the codes) as `$nin` on each field where the alternatives are exact
            # values (the same documents): SecantusDB 0.7 evaluates a `$nor` document by
            # document on a slow path (9.4 s for 100,000 Tasks, against 0.04 s for `$nin`).
            exact = [o[f"{field}|"] for o in others if isinstance(o.get(f"{field}|"), str)]
            if len(exact) == len(others):
                return Clause({**({field: {"$nin": plain}} if plain else {}),
                               **({f"{field}|": {"$nin": exact}} if exact else {})}, 6, positive=False)
            return Clause({"$nor": [clause]}, 6, positive=False)
        return Clause(clause, 1 if param.code == "identifier" else 3)

    # ------------------------------------------------------------------ string, uri

    def _string(self, param: SearchParam, modifier: str | None, alts: list[str]) -> Clause:
        field = param.field
        values = [unescape(a) for a in alts]
        if modifier == "exact":
            return Clause(_or([
                {"$or": [{f"{field}:exact": v},
                         {field: v, f"{field}:exact": {"$exists": False}}]} for v in values
            ]), 3)
        folded = [fold(v) for v in values]
        if modifier == "contains":
            return Clause(_or([{field: {"$regex": re.escape(f)}} for f in folded]), 4)
        return Clause(_or([{field: _prefix_range(f)} if f else {field: {"$exists": True}}
                           for f in folded]), 3)

    def _uri(self, param: SearchParam, modifier: str | None, alts: list[str]) -> Clause:
        field = param.field
        values = [unescape(a) for a in alts]
        if modifier == "below":
            return Clause(_or([{field: _prefix_range(v)} for v in values]), 3)
        if modifier == "above":
            candidates: list[str] = []
            for v in values:
                parts = v.split("/")
                candidates.extend("/".join(parts[:i]) for i in range(len(parts), 2, -1))
            return Clause(_any(field, candidates or values), 3)
        return Clause(_any(field, values), 2)

    # ------------------------------------------------------------------ reference

    def _reference(self, param: SearchParam, modifier: str | None, alts: list[str]) -> Clause:
        field = param.field
        if modifier == "identifier":
            ident = SearchParam(f"{param.code}:identifier", param.resource_type, "token",
                                param.url, "")
            clause = self._token(ident, None, alts, f"{param.code}:identifier")
            return Clause(clause.filter, 1)
        refs: list[str] = []
        for alt in alts:
            value = self.extractor.normalize_reference(unescape(alt))
            if modifier:  # :Type
                refs.append(f"{modifier}/{value}" if "/" not in value else value)
            elif "/" in value or ":" in value:
                refs.append(value)
            else:
                refs.extend(f"{t}/{value}" for t in param.target_types())
        return Clause(_any(field, refs), 1)

    # ------------------------------------------------------------------ ordered types

    def _date(self, name: str, field: str, alt: str, *, point: bool = False) -> Doc:
        prefix, text = split_prefix(unescape(alt))
        low, high = date_range(text, name)
        if prefix == "ap":
            now = datetime.now(UTC)
            gap = max(abs(now - low) / 10, timedelta(days=1))
            low, high = shifted(low, -gap), min(shifted(high, gap), MAX_DATE)
        if point:  # _lastUpdated: an instant, [ts, ts + 1ms)
            s = e = field
            ops = {
                "eq": {s: {"$gte": low, "$lt": high}}, "ap": {s: {"$gte": low, "$lt": high}},
                "gt": {s: {"$gte": high}}, "sa": {s: {"$gte": high}},
                "lt": {s: {"$lt": low}}, "eb": {s: {"$lt": low}},
                "ge": {s: {"$gte": low}}, "le": {s: {"$lt": high}},
            }
        else:
            s, e = f"{field}.s", f"{field}.e"
            ops = {
                "eq": {s: {"$gte": low}, e: {"$lte": high}},
                "ap": {s: {"$lt": high}, e: {"$gt": low}},
                "gt": {e: {"$gt": high}}, "lt": {s: {"$lt": low}},
                "ge": {e: {"$gt": low}}, "le": {s: {"$lt": high}},
                "sa": {s: {"$gte": high}}, "eb": {e: {"$lte": low}},
            }
        if prefix == "ne":
            return {"$nor": [ops["eq"]]}
        return ops[prefix]

    def _number(self, name: str, field: str, alt: str) -> Doc:
        prefix, text = split_prefix(unescape(alt))
        value, low, high = parse_number(text, name)
        return _ordered(field, prefix, value, low, high)

    def _quantity(self, name: str, field: str, alt: str) -> Doc:
        parts = [unescape(p) for p in split_unescaped(alt, "|")]
        if len(parts) not in (1, 3):
            raise BadRequest(f"'{alt[:60]}' is not a quantity (number|system|code) for {name}",
                             code="value")
        prefix, text = split_prefix(parts[0])
        value, low, high = parse_number(text, name)
        out = _ordered(f"{field}.v", prefix, value, low, high)
        if len(parts) == 3:
            if parts[1]:
                out[f"{field}.s"] = parts[1]
            if parts[2]:
                out[f"{field}.c"] = parts[2]
        return out

    def _composite(self, param: SearchParam, alts: list[str]) -> Clause:
        values = []
        for alt in alts:
            parts = split_unescaped(alt, "$")
            if len(parts) != len(param.components):
                raise BadRequest(f"{param.code} takes {len(param.components)} values joined "
                                 "by $", code="value")
            normalized = []
            for part, component in zip(parts, param.components, strict=True):
                text = unescape(part)
                if component.type == "token":
                    text = split_unescaped(part, "|")[-1]
                    text = unescape(text)
                elif component.type == "reference":
                    text = self.extractor.normalize_reference(text)
                elif component.type == "string":
                    text = fold(text)
                normalized.append(text)
            values.append("$".join(normalized))
        return Clause(_any(param.field, values), 2)


def _positive(doc: Doc) -> bool:
    if "$nor" in doc:
        return False
    if "$or" in doc:
        return all(_positive(d) for d in doc["$or"])
    return True


def _ranged(doc: Doc) -> Clause:
    return Clause(doc, 4, positive=_positive(doc))


def _ordered(field: str, prefix: str, value: float, low: float, high: float) -> Doc:
    if prefix == "ap":
        gap = abs(value) / 10
        return {field: {"$gte": value - gap, "$lte": value + gap}}
    ops: dict[str, Doc] = {
        "eq": {field: {"$gte": low, "$lt": high}},
        "gt": {field: {"$gt": value}}, "sa": {field: {"$gt": value}},
        "lt": {field: {"$lt": value}}, "eb": {field: {"$lt": value}},
        "ge": {field: {"$gte": value}}, "le": {field: {"$lte": value}},
    }
    if prefix == "ne":
        return {"$nor": [ops["eq"]]}
    return ops[prefix]
