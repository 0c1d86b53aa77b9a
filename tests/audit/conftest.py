"""Audit tests run in the Consent tests' world (Anna, her people, the auditor)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from tests.consent.conftest import World, eventually, tokens, world

__all__ = ["audit_events", "jti", "tokens", "world"]


def jti(token: str) -> str:
    payload = token.split(".")[1]
    value: str = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return value


def audit_events(world: World, **params: str) -> list[dict[str, Any]]:
    """AuditEvents matching `params`, as the auditor sees them (waiting for the batch)."""

    def found() -> list[dict[str, Any]]:
        query = [*params.items(), ("date", f"ge{world.started}"), ("_count", "200")]
        bundle = world.auditor.get("/AuditEvent", params=query).json()
        return [e["resource"] for e in bundle.get("entry", [])]

    result: list[dict[str, Any]] = eventually(found)
    return result
