"""Every specification example of a stored type round-trips through create and read unchanged
apart from `meta` (server-owned versionId/lastUpdated) and, for POST, `id`."""

from __future__ import annotations

import json

import httpx
import pytest

from fhir_server.resource_types import STORED
from tests.conftest import EXAMPLES_DIR


def _stored_examples() -> list[str]:
    names = []
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        if json.loads(path.read_text()).get("resourceType") in STORED:
            names.append(path.name)
    return names


EXAMPLES = _stored_examples()


def _strip(resource: dict) -> dict:
    out = {k: v for k, v in resource.items() if k != "id"}
    meta = {k: v for k, v in out.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    out.pop("meta", None)
    if meta:
        out["meta"] = meta
    return out


def test_there_are_examples_of_every_coordination_type() -> None:
    kinds = {json.loads((EXAMPLES_DIR / n).read_text())["resourceType"] for n in EXAMPLES}
    assert {"Task", "Appointment", "CarePlan", "CareTeam", "Communication", "DocumentReference",
            "Consent", "Subscription", "AuditEvent", "Provenance", "Binary"} <= kinds
    assert len(EXAMPLES) > 100


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_round_trips(client: httpx.Client, name: str) -> None:
    example = json.loads((EXAMPLES_DIR / name).read_text())
    rtype = example["resourceType"]
    created = client.post(f"/{rtype}", json=example)
    if rtype == "Subscription":
        # Observation is stored, so the criteria stand; the endpoint https://biliwatch.com/...
        # does not resolve here (no public DNS), which the SSRF policy refuses at create time
        # (tests/subscriptions covers what is accepted).
        assert created.status_code == 422, created.text[:1000]
        assert "endpoint host 'biliwatch.com'" in created.json()["issue"][0]["diagnostics"]
        return
    assert created.status_code == 201, created.text[:1000]
    read = client.get(f"/{rtype}/{created.json()['id']}")
    assert read.status_code == 200
    assert _strip(read.json()) == _strip(example)
    if "id" in example:
        put = client.put(f"/{rtype}/{example['id']}", json=example)
        assert put.status_code == 201, put.text[:1000]
        assert client.get(f"/{rtype}/{example['id']}").json()["id"] == example["id"]
