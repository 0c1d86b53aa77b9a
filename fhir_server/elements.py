"""`_summary` and `_elements`: returning part of a resource, marked SUBSETTED.

Which elements are summary or mandatory comes from the R4 StructureDefinitions, through the
`StructureInfo` tables the validation package generates.
"""

from __future__ import annotations

from typing import Any, Protocol

from fhir_server.errors import BadRequest

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
SUMMARY_MODES = ("true", "text", "data", "count", "false")
_ALWAYS = ("resourceType", "id", "meta")


class StructureInfo(Protocol):
    def summary_elements(self, resource_type: str) -> frozenset[str]: ...
    def mandatory_elements(self, resource_type: str) -> frozenset[str]: ...
    def choice_elements(self, resource_type: str) -> dict[str, tuple[str, ...]]: ...


def check_summary(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in SUMMARY_MODES:
        raise BadRequest(f"_summary must be one of {', '.join(SUMMARY_MODES)}", code="value")
    return value


def _mark_subsetted(resource: dict[str, Any]) -> None:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    resource["meta"] = meta


def _keep(resource: dict[str, Any], names: set[str]) -> dict[str, Any]:
    # `_name` carries a primitive's id/extensions: it goes wherever `name` goes.
    return {k: v for k, v in resource.items() if k in names or (k[:1] == "_" and k[1:] in names)}


def _expand(names: set[str], choices: dict[str, tuple[str, ...]]) -> set[str]:
    out = set(names)
    for name in names:
        out.update(choices.get(name, ()))
    return out


def apply_summary(resource: dict[str, Any], mode: str, info: StructureInfo) -> dict[str, Any]:
    if mode == "false":
        return resource
    rtype = resource["resourceType"]
    if mode == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif mode == "text":
        keep = {*_ALWAYS, "text", *info.mandatory_elements(rtype)}
        out = _keep(resource, keep)
    else:  # "true" (and "count", which the search layer answers without entries)
        keep = {*_ALWAYS, *_expand(set(info.summary_elements(rtype)), info.choice_elements(rtype))}
        out = _keep(resource, keep)
    _mark_subsetted(out)
    return out


def apply_elements(resource: dict[str, Any], names: list[str], info: StructureInfo) -> dict[str, Any]:
    rtype = resource["resourceType"]
    wanted = {n.strip() for n in names if n.strip()}
    # "Task.status" and "status" both name the top-level element.
    wanted = {n.split(".", 1)[1] if n.startswith(rtype + ".") else n for n in wanted}
    keep = {*_ALWAYS, *info.mandatory_elements(rtype), *_expand(wanted, info.choice_elements(rtype))}
    out = _keep(resource, keep)
    _mark_subsetted(out)
    return out
