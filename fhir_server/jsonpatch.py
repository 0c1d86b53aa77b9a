"""JSON Patch (RFC 6902) applied to a resource, for the FHIR patch interaction.

Small and strict: every failure is a FhirError (400 for a malformed patch, 422 for a patch
that does not apply, e.g. a failed `test`), never an exception of another kind.
"""

from __future__ import annotations

import copy
from typing import Any

from fhir_server.errors import BadRequest, InvalidResource

Json = Any


def _pointer(path: object) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise BadRequest(f"JSON Patch path must be a JSON Pointer, not {str(path)[:80]!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Json], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise InvalidResource(f"'{token[:40]}' is not an array index")
    i = int(token)
    limit = len(container) + (1 if for_add else 0)
    if i >= limit:
        raise InvalidResource(f"array index {i} is out of range")
    return i


def _parent(doc: Json, tokens: list[str]) -> Json:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise InvalidResource(f"path element '{token[:40]}' does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_add=False)]
        else:
            raise InvalidResource(f"path element '{token[:40]}' is inside a primitive value")
    return node


def _get(doc: Json, tokens: list[str]) -> Json:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise InvalidResource(f"path element '{last[:40]}' does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise InvalidResource("path points inside a primitive value")


def _add(doc: Json, tokens: list[str], value: Json) -> Json:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise InvalidResource("cannot add inside a primitive value")
    return doc


def _remove(doc: Json, tokens: list[str]) -> Json:
    if not tokens:
        raise InvalidResource("cannot remove the whole resource")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise InvalidResource(f"path element '{last[:40]}' does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, for_add=False)]
    else:
        raise InvalidResource("cannot remove inside a primitive value")
    return doc


def _replace(doc: Json, tokens: list[str], value: Json) -> Json:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        parent[last] = value  # in place: keeps the element where it was
    elif isinstance(parent, list):
        parent[_index(parent, last, for_add=False)] = value
    else:
        raise InvalidResource(f"path element '{last[:40]}' does not exist")
    return doc


def apply_patch(resource: dict[str, Any], operations: Json) -> dict[str, Any]:
    """Returns a patched copy of `resource`; the input is left untouched."""
    if not isinstance(operations, list):
        raise BadRequest("a JSON Patch document is a JSON array of operations")
    doc: Json = copy.deepcopy(resource)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise BadRequest(f"JSON Patch operation {n} has no 'op'")
        kind = op["op"]
        tokens = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(f"JSON Patch operation {n} ({kind}) has no 'value'")
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, tokens)
        elif kind == "replace":
            doc = _replace(doc, tokens, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            if kind == "move" and tokens[: len(source)] == source and tokens != source:
                raise InvalidResource("cannot move a value into itself")
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op["value"]:
                raise InvalidResource(f"JSON Patch test failed at {op.get('path')}")
        else:
            raise BadRequest(f"unknown JSON Patch op '{kind[:20]}'")
    if not isinstance(doc, dict):
        raise InvalidResource("the patch did not leave a resource")
    return doc
