"""Small helpers shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

import httpx


def count(client: httpx.Client, resource_type: str, **params: Any) -> int:
    """How many resources of a type match: FHIR's own `_summary=count` search."""
    r = client.get(f"/{resource_type}", params={**params, "_summary": "count", "_total": "accurate"})
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total
