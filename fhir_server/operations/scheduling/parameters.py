"""FHIR Parameters in and out of the scheduling operations. Pure functions."""

from __future__ import annotations

import uuid
from typing import Any

from fhir_server.errors import BadRequest

Doc = dict[str, Any]

_TEXT_VALUES = ("valueString", "valueCode", "valueDate", "valueDateTime", "valueInstant", "valueUri",
                "valueUrl", "valueCanonical", "valueId", "valueBoolean", "valueInteger", "valuePositiveInt")


def _text(part: Doc) -> str | None:
    for key in _TEXT_VALUES:
        if key in part:
            value = part[key]
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
    if isinstance(part.get("valueReference"), dict):
        reference = part["valueReference"].get("reference")
        return reference if isinstance(reference, str) else None
    coding = part.get("valueCoding")
    if coding is None and isinstance(part.get("valueCodeableConcept"), dict):
        coding = (part["valueCodeableConcept"].get("coding") or [None])[0]
    if isinstance(coding, dict) and isinstance(coding.get("code"), str):
        system = coding.get("system")
        return f"{system}|{coding['code']}" if isinstance(system, str) else coding["code"]
    return None


def parameters(body: Any) -> list[Doc]:
    """The `parameter` list of a Parameters resource (400 for anything else)."""
    if body is None:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("the operation's body must be a Parameters resource", code="invalid")
    found = body.get("parameter", [])
    if not isinstance(found, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str)
                                              for p in found):
        raise BadRequest("Parameters.parameter must be a list of named parameters", code="structure")
    return found


def as_pairs(body: Any) -> list[tuple[str, str]]:
    """A Parameters body as (name, text) pairs, like a query string (resources left out)."""
    pairs: list[tuple[str, str]] = []
    for part in parameters(body):
        text = _text(part)
        if text is not None:
            pairs.append((part["name"], text))
    return pairs


def resource_parameter(body: Any, name: str, resource_type: str) -> Doc | None:
    """The resource given as parameter `name`, which must be a `resource_type`."""
    for part in parameters(body):
        if part["name"] == name:
            resource = part.get("resource")
            if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
                raise BadRequest(f"parameter {name} must carry a {resource_type} resource", code="invalid")
            return resource
    return None


def text_parameter(body: Any, name: str) -> str | None:
    return next((text for key, text in as_pairs(body) if key == name), None)


def bundle_of(base_url: str, resources: list[Doc], kind: str = "collection") -> Doc:
    """A Bundle answering an operation: each resource with its fullUrl (urn:uuid when new)."""
    entries = []
    for resource in resources:
        rid = resource.get("id")
        full = f"{base_url}/{resource['resourceType']}/{rid}" if rid else f"urn:uuid:{uuid.uuid4()}"
        entry: Doc = {"fullUrl": full, "resource": resource}
        if kind == "searchset":
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    bundle: Doc = {"resourceType": "Bundle", "type": kind}
    if kind == "searchset":
        bundle["total"] = len(entries)
    bundle["entry"] = entries
    return bundle
