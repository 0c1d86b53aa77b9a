"""Opaque page cursors: the sort key of the last entry of a page, signed against tampering.

Paging resumes *after* that key (keyset paging), so page 500 costs what page 1 costs and a
concurrent write never shifts or repeats entries the way skip/limit does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import orjson
from bson import json_util

from fhir_server.errors import BadRequest

# A per-process key would break paging across processes behind a load balancer; a
# deployment sets FHIR_CURSOR_KEY. The cursor only holds sort keys, never access decisions.
_KEY = os.environ.get("FHIR_CURSOR_KEY", "fhir-cursor-key").encode()


def encode(values: list[Any]) -> str:
    body = json_util.dumps(values).encode()
    mac = hmac.new(_KEY, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def decode(token: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, body = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, hmac.new(_KEY, body, hashlib.sha256).digest()[:12]):
            raise ValueError("bad signature")
        values = json_util.loads(body)
        if not isinstance(values, list):
            raise ValueError("not a list")
        return values
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("the paging cursor is not valid (expired or altered)") from None


def after(keys: list[tuple[str, int]], values: list[Any]) -> dict[str, Any]:
    """MongoDB filter for "sorts after `values`" under the sort `keys` (field, direction)."""
    alternatives: list[dict[str, Any]] = []
    for i, (field, direction) in enumerate(keys):
        clause: dict[str, Any] = {f: v for (f, _), v in zip(keys[:i], values[:i], strict=True)}
        clause[field] = {"$lt" if direction < 0 else "$gt": values[i]}
        alternatives.append(clause)
    return {"$or": alternatives}
