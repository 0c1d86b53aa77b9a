"""Write-time extraction: a resource's search values, normalized, for the `sp` sub-document.

Layout of `sp` (one key per parameter code; a single value is stored bare, several as a list,
none not at all, so compound indexes never meet two arrays in common documents):
- token:      `code` -> codes; `code|` -> "system|code" (only when some value has a system);
              `code:text` -> folded display/text; `code:type` -> "typesystem|typecode|value"
              (identifiers with a type, for :of-type)
- string:     `code` -> folded (lowercase, accents removed); `code:exact` -> as written, only
              when some value differs from its folded form
- reference:  `code` -> "Type/id" (our own absolute URLs made relative; others kept as URLs);
              `code:identifier` / `code:identifier|` -> the reference's identifier as a token
- date:       `code` -> {s, e}: the [start, end) range the value covers at its precision
- number:     `code` -> float;  quantity: `code` -> {v, s, c}
- uri:        `code` -> the URI;  composite: `code` -> component values joined by "$"
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.search.registry import SearchParam
from fhir_server.search.values import MAX_DATE, MIN_DATE, date_range, fold

Doc = dict[str, Any]
CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def _put(out: Doc, key: str, values: Iterable[Any]) -> None:
    unique = list(dict.fromkeys(v for v in values if v is not None and v != ""))
    if len(unique) == 1:
        out[key] = unique[0]
    elif unique:
        out[key] = unique


def _put_dicts(out: Doc, key: str, values: list[Doc]) -> None:
    seen: list[Doc] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    if len(seen) == 1:
        out[key] = seen[0]
    elif seen:
        out[key] = seen


class Extractor:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"

    def extract(self, params: Iterable[SearchParam], resource: Doc, out: Doc | None = None) -> Doc:
        """The values of `params` in `resource`, added to `out` (a new dict by default)."""
        out = {} if out is None else out
        for param in params:
            if not param.branches or param.code in ("_id", "_lastUpdated"):
                continue
            try:
                self._one(out, param, resource)
            except BadRequest:
                continue
            except Exception:
                continue
        return out

    @staticmethod
    def values(param: SearchParam, resource: Doc) -> list[tuple[Any, str | None]]:
        """What `param`'s branches find in `resource`, each with its branch's `resolve() is`
        type: all a parameter's search values depend on (search.memo keys on it)."""
        return [(v, b.is_type) for b in param.branches for v in b.evaluate(resource)]

    def reference_parts(self, value: Any, is_type: str | None) -> tuple[str | None, Doc | None]:
        """What one value of a reference parameter contributes: its normalized reference
        (if it is one, to a resource of `is_type`) and its identifier."""
        ref = self.reference(value)
        kept = ref if ref is not None and (is_type is None or ref_type(ref) == is_type) else None
        ident = value.get("identifier") if isinstance(value, dict) else None
        return kept, ident if isinstance(ident, dict) else None

    def put_references(self, out: Doc, code: str, parts: list[tuple[str | None, Doc | None]]) -> None:
        """A reference parameter's search values from its values' `reference_parts`."""
        _put(out, code, [ref for ref, _ in parts if ref is not None])
        idents = [ident for _, ident in parts if ident is not None]
        if idents:
            self.tokens(out, f"{code}:identifier", idents)

    def _one(self, out: Doc, param: SearchParam, resource: Doc) -> None:
        values = self.values(param, resource)
        if not values:
            return
        kind = param.type
        if kind == "token":
            self.tokens(out, param.code, [v for v, _ in values])
        elif kind == "string":
            strings = [s for v, _ in values for s in _strings(v)]
            folded = [fold(s) for s in strings]
            _put(out, param.code, folded)
            if any(f != s for f, s in zip(folded, strings, strict=True)):
                _put(out, f"{param.code}:exact", strings)
        elif kind == "reference":
            parts = [self.reference_parts(value, is_type) for value, is_type in values]
            self.put_references(out, param.code, parts)
        elif kind == "date":
            ranges = [r for v, _ in values for r in _date_ranges(v)]
            _put_dicts(out, param.code, [{"s": s, "e": e} for s, e in ranges])
        elif kind == "uri":
            _put(out, param.code, [v for v, _ in values if isinstance(v, str)])
        elif kind == "number":
            _put(out, param.code, [float(v) for v, _ in values if _is_number(v)])
        elif kind == "quantity":
            _put_dicts(out, param.code, [q for v, _ in values if (q := _quantity(v))])
        elif kind == "composite":
            _put(out, param.code, self.composites(param, [v for v, _ in values]))

    def tokens(self, out: Doc, key: str, values: list[Any]) -> None:
        codes: list[str] = []
        pairs: list[str] = []
        texts: list[str] = []
        typed: list[str] = []
        for value in values:
            for system, code, text in _tokens(value):
                if code is not None:
                    codes.append(code)
                    pairs.append(f"{system or ''}|{code}")
                if text:
                    texts.append(fold(text))
            if isinstance(value, dict) and isinstance(value.get("type"), dict) and value.get("value"):
                for system, code, _ in _tokens(value["type"]):
                    if code:
                        typed.append(f"{system or ''}|{code}|{value['value']}")
        _put(out, key, codes)
        if any(not p.startswith("|") for p in pairs):
            _put(out, f"{key}|", pairs)
        _put(out, f"{key}:text", texts)
        _put(out, f"{key}:type", typed)

    def reference(self, value: Any) -> str | None:
        if isinstance(value, str):  # canonical
            return value
        if not isinstance(value, dict):
            return None
        ref = value.get("reference")
        if not isinstance(ref, str) or not ref or ref.startswith("#"):
            return None
        return self.normalize_reference(ref)

    def normalize_reference(self, ref: str) -> str:
        if ref.startswith(self.base_url):
            ref = ref[len(self.base_url):]
        if "/_history/" in ref:
            ref = ref.split("/_history/", 1)[0]
        return ref

    def composites(self, param: SearchParam, values: list[Any]) -> list[str]:
        out: list[str] = []
        for value in values:
            combos = [""]
            for i, component in enumerate(param.components):
                parts: list[str] = []
                for item in component.evaluate(value):
                    if component.type == "reference":
                        ref = self.reference(item)
                        parts.extend([ref] if ref else [])
                    elif component.type == "token":
                        parts.extend(c for _, c, _ in _tokens(item) if c)
                    elif isinstance(item, str):
                        parts.append(fold(item) if component.type == "string" else item)
                sep = "$" if i else ""
                combos = [c + sep + p for c in combos for p in parts]
            out.extend(combos)
        return out


def ref_type(ref: str) -> str | None:
    parts = ref.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def _is_number(value: Any) -> bool:
    # fhirpathpy hands decimals back as Decimal
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _tokens(value: Any) -> list[tuple[str | None, str | None, str | None]]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [(None, value, None)]
    if _is_number(value):
        return [(None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        out = [t for c in value.get("coding") or [] for t in _tokens(c)]
        if isinstance(value.get("text"), str):
            out.append((None, None, value["text"]))
        return out
    if "code" in value:  # Coding (or Quantity used as a token)
        return [(value.get("system"), str(value["code"]), value.get("display"))]
    if "value" in value:  # Identifier, ContactPoint
        system = value.get("system")
        if system in CONTACT_SYSTEMS:  # a ContactPoint: its "system" is a kind, not a URI
            system = None
        text = value["type"].get("text") if isinstance(value.get("type"), dict) else None
        return [(system, str(value["value"]), text)]
    return []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    out: list[str] = []
    for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "district",
                "state", "postalCode", "country"):
        item = value.get(key)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(i for i in item if isinstance(i, str))
    return out


def _date_ranges(value: Any) -> list[tuple[datetime, datetime]]:
    if isinstance(value, str):
        return [date_range(value)]
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:  # Period
        start = date_range(value["start"])[0] if isinstance(value.get("start"), str) else MIN_DATE
        end = date_range(value["end"])[1] if isinstance(value.get("end"), str) else MAX_DATE
        return [(start, end)]
    if "event" in value:  # Timing
        return [date_range(e) for e in value["event"] if isinstance(e, str)]
    return []


def _quantity(value: Any) -> Doc | None:
    if not isinstance(value, dict) or not _is_number(value.get("value")):
        return None
    out: Doc = {"v": float(value["value"])}
    if value.get("system"):
        out["s"] = value["system"]
    code = value.get("code") or value.get("unit")
    if code:
        out["c"] = code
    return out
