"""Helpers for search tests: create resources over HTTP, search, and check every Bundle
against the official R4 JSON schema."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft6Validator

SCHEMA = Path(__file__).resolve().parents[2] / "fhir_server" / "data" / "fhir.schema.json"


@cache
def validator(definition: str) -> Draft6Validator:
    schema = json.loads(SCHEMA.read_text())
    return Draft6Validator({"$ref": f"#/definitions/{definition}",
                            "definitions": schema["definitions"]})


def check_searchset(bundle: dict[str, Any]) -> None:
    """Validates against the R4 schema: each entry's resource against its own type (the
    schema's ResourceList `oneOf` over every type is slow), the Bundle with stand-ins."""
    shell = dict(bundle)
    shell["entry"] = []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
                  for e in validator(resource["resourceType"]).iter_errors(resource)]
        assert not errors, errors[:5]
        shell["entry"].append({**entry, "resource": {"resourceType": "Binary",
                                                      "contentType": "text/plain"}})
    if not shell["entry"]:
        del shell["entry"]
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in validator("Bundle").iter_errors(shell)]
    assert not errors, errors[:5]
    assert bundle["type"] == "searchset"


class Searcher:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def create(self, resource: dict[str, Any]) -> str:
        r = self.client.post(f"/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def put(self, resource: dict[str, Any]) -> str:
        r = self.client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code in (200, 201), r.text
        return str(resource["id"])

    def bundle(self, url: str, status: int = 200, **kw: Any) -> dict[str, Any]:
        r = self.client.get(url, **kw)
        assert r.status_code == status, r.text
        body: dict[str, Any] = r.json()
        if status == 200:
            check_searchset(body)
        return body

    def ids(self, url: str, **kw: Any) -> list[str]:
        """Ids of the matches (search.mode=match), in Bundle order."""
        body = self.bundle(url, **kw)
        return [e["resource"]["id"] for e in body.get("entry", [])
                if e["search"]["mode"] == "match"]

    def idset(self, url: str, **kw: Any) -> set[str]:
        return set(self.ids(url, **kw))

    def error(self, url: str, status: int = 400, **kw: Any) -> str:
        r = self.client.get(url, **kw)
        assert r.status_code == status, r.text
        body = r.json()
        assert body["resourceType"] == "OperationOutcome"
        return " ".join(i.get("diagnostics", "") for i in body["issue"])


@pytest.fixture
def s(client: httpx.Client) -> Searcher:
    return Searcher(client)
