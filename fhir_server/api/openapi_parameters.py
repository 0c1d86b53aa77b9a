"""The OpenAPI document's parameters: path ids, the result parameters, the conditional headers,
and each type's search parameters, declared once under components.parameters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fhir_server.api.negotiation import FHIR_JSON, JSON
from fhir_server.api.openapi_schemas import ID_PATTERN, Schema
from fhir_server.elements import SUMMARY_MODES

# Parameters every type shares (api/search.py SYSTEM_PARAMS): a search over several types
# takes only these.
COMMON_SEARCH = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


STRINGS: Schema = {"type": "array", "items": {"type": "string"}}
RESULT_PARAMS: dict[str, dict[str, Any]] = {
    "_count": query("_count", {"type": "integer", "minimum": 0}, "Page size (0: only the total)"),
    "_sort": query("_sort", {"type": "string"}, "Comma-separated parameters, '-' for descending"),
    "_include": query("_include", STRINGS, "Type:parameter[:target] to include"),
    "_revinclude": query("_revinclude", STRINGS, "Type:parameter[:target] referring to matches"),
    "_summary": query("_summary", {"enum": list(SUMMARY_MODES)}, "Return a summary"),
    "_elements": query("_elements", {"type": "string"}, "Comma-separated elements to return"),
    "_total": query("_total", {"enum": ["none", "estimate", "accurate"]}, "Whether to count matches"),
    "_type": query("_type", {"type": "string"}, "Comma-separated resource types"),
    "_since": query("_since", {"type": "string"}, "Only versions changed after this instant"),
    "_at": query("_at", {"type": "string"}, "Versions current at this date"),
    "_format": query("_format", {"enum": ["json", FHIR_JSON, JSON]}, "Response format (JSON only)"),
    "_pretty": query("_pretty", {"enum": ["true", "false"]}, "Indent the response"),
}
SHAPE = ("_summary", "_elements", "_format", "_pretty")
PREFER = _header("Prefer", "return=minimal|representation|OperationOutcome; handling=strict|lenient")
IF_MATCH = _header("If-Match", 'The version the change applies to: W/"3"')
IF_NONE_EXIST = _header("If-None-Exist", "Conditional create: a search query string")
IF_NONE_MATCH = _header("If-None-Match", 'Answer 304 when the version is still W/"3"')
IF_MODIFIED_SINCE = _header("If-Modified-Since", "Answer 304 when unchanged since this HTTP date")


def path_param(name: str) -> dict[str, Any]:
    schemas: dict[str, Schema] = {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "vid": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        "file": {"type": "string", "enum": ["Location.ndjson", "Schedule.ndjson", "Slot.ndjson"]},
    }
    return {"name": name, "in": "path", "required": True, "schema": schemas[name],
            "description": {"id": "Logical id", "vid": "Version id", "file": "A published file"}[name],
            "example": {"id": "example", "vid": "1", "file": "Slot.ndjson"}[name]}  # the spec's examples


def _search_param(param: dict[str, Any]) -> dict[str, Any]:
    description = f"{param['type']} parameter ({param['definition']})"
    if param.get("documentation"):
        description = f"{param['documentation']} — {description}"
    return query(param["name"], {"type": "string"}, description)


# Search and result parameters are declared once under components.parameters and referred to
# by every operation that takes them (a type's search parameters serve six operations).
def _key(rtype: str, name: str) -> str:
    owner = "Resource" if name in COMMON_SEARCH else rtype
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{owner}.{name}")


def _use(key: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{key}"}


def searched(rtype: str, params: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return [_use(_key(rtype, p["name"])) for p in params]


def results(*names: str) -> list[dict[str, str]]:
    return [_use(n) for n in names]


def component_parameters(search: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(RESULT_PARAMS)
    for rtype, params in search.items():
        for param in params:
            out.setdefault(_key(rtype, param["name"]), _search_param(param))
    return out
