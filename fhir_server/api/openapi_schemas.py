"""JSON schemas for the OpenAPI document: a shallow subset of the official R4 schema.

Each stored type gets its top-level elements with their JSON shape (array or not; string,
number, boolean or object), read from the official schema the validator ships with. That is
enough for a fuzzer's response checks to mean something (a `name` that is not an array, a
`resourceType` that is not the type) without restating the whole specification: nested
elements are only "an object", and no binding or invariant is repeated here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.resource_types import ID_RE, STORED_TYPES

Schema = dict[str, Any]

_OFFICIAL = Path(__file__).resolve().parent.parent / "data" / "fhir.schema.json"
ID_PATTERN = f"^{ID_RE.pattern}$"
JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


@cache
def _definitions() -> dict[str, Any]:
    definitions: dict[str, Any] = json.loads(_OFFICIAL.read_text())["definitions"]
    return definitions


def _shape(prop: dict[str, Any]) -> Schema:
    """The JSON shape of one element of the official schema (one level deep)."""
    if prop.get("type") == "array":
        return {"type": "array", "items": _shape(prop.get("items", {}))}
    target = prop
    if "$ref" in prop:
        target = _definitions().get(prop["$ref"].rsplit("/", 1)[-1], {})
    kind = target.get("type")
    if kind in ("string", "boolean", "number"):
        return {"type": kind}
    if "enum" in target or "pattern" in target or target == {}:
        return {"type": "string"}  # a code (enum), or xhtml (the schema leaves it open)
    return {"type": "object"}  # a complex type, a backbone element or a contained resource


def resource_schema(resource_type: str) -> Schema:
    definition = _definitions()[resource_type]
    properties: dict[str, Schema] = {
        name: _shape(prop) for name, prop in sorted(definition["properties"].items())
        if name != "resourceType"
    }
    properties["id"] = {"type": "string", "pattern": ID_PATTERN}
    properties["meta"] = ref("Meta")
    return {
        "type": "object",
        "description": f"A FHIR R4 {resource_type} (top-level elements only; "
                       f"http://hl7.org/fhir/R4/{resource_type.lower()}.html)",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": resource_type}, **properties},
    }


def _bundle(types: list[str], entry_resource: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "id": {"type": "string", "pattern": ID_PATTERN},
            "meta": ref("Meta"),
            "type": {"enum": types},
            "timestamp": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "link": {"type": "array", "items": {
                "type": "object", "required": ["relation", "url"],
                "properties": {"relation": {"type": "string"}, "url": {"type": "string"}},
            }},
            "entry": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": entry_resource,
                    "search": {"type": "object", "properties": {
                        "mode": {"enum": ["match", "include", "outcome"]},
                        "score": {"type": "number"},
                    }},
                    "request": {"type": "object", "required": ["method", "url"], "properties": {
                        "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]},
                        "url": {"type": "string"},
                    }},
                    "response": {"type": "object", "required": ["status"], "properties": {
                        "status": {"type": "string"},
                        "location": {"type": "string"},
                        "etag": {"type": "string"},
                        "lastModified": {"type": "string"},
                        "outcome": ref("Resource"),
                    }},
                },
            }},
        },
    }


def _operation_outcome() -> Schema:
    return {
        "type": "object",
        "description": "Every error this server answers (http://hl7.org/fhir/R4/operationoutcome.html)",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "details": {"type": "object"},
                    "diagnostics": {"type": "string"},
                    "location": {"type": "array", "items": {"type": "string"}},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            }},
        },
    }


def component_schemas() -> dict[str, Schema]:
    schemas: dict[str, Schema] = {
        "Meta": {"type": "object", "properties": {
            "versionId": {"type": "string"}, "lastUpdated": {"type": "string"},
            "source": {"type": "string"},
            "profile": {"type": "array", "items": {"type": "string"}},
            "security": {"type": "array", "items": {"type": "object"}},
            "tag": {"type": "array", "items": {"type": "object"}},
        }},
        "Resource": {
            "type": "object", "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"},
                           "id": {"type": "string", "pattern": ID_PATTERN}, "meta": ref("Meta")},
        },
        "OperationOutcome": _operation_outcome(),
        "Parameters": {
            "type": "object", "required": ["resourceType"],
            "properties": {"resourceType": {"const": "Parameters"}, "parameter": {
                "type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}}},
            }},
        },
        "CapabilityStatement": {
            "type": "object", "required": ["resourceType", "status", "kind", "fhirVersion", "format"],
            "properties": {"resourceType": {"const": "CapabilityStatement"}, "status": {"type": "string"},
                           "kind": {"type": "string"}, "fhirVersion": {"type": "string"},
                           "format": {"type": "array", "items": {"type": "string"}},
                           "rest": {"type": "array", "items": {"type": "object"}}},
        },
        "Bundle": _bundle(["batch", "transaction"], ref("Resource")),
        "SearchsetBundle": _bundle(["searchset"], ref("Resource")),
        "HistoryBundle": _bundle(["history"], ref("Resource")),
        "BatchResponseBundle": _bundle(["batch-response", "transaction-response"], ref("Resource")),
        "JsonPatch": {
            "type": "array", "description": "RFC 6902 JSON Patch",
            "items": {"type": "object", "required": ["op", "path"], "properties": {
                "op": {"enum": list(JSON_PATCH_OPS)}, "path": {"type": "string"},
                "from": {"type": "string"}, "value": {},
            }},
        },
    }
    for rtype in STORED_TYPES:
        schemas[rtype] = resource_schema(rtype)
    return schemas
