"""Batch entries run concurrently only across distinct resources: the outcome is request order's."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from fhir_server.batch.batch import waves
from fhir_server.batch.entries import parse_entries

FHIR = {"content-type": "application/fhir+json"}
BASE = "http://127.0.0.1/fhir"


def _task(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **extra}


def test_entries_on_one_resource_keep_request_order(client: httpx.Client) -> None:
    entries = [
        {"resource": _task(id="ordered"), "request": {"method": "PUT", "url": "Task/ordered"}},
        {"request": {"method": "GET", "url": "Task/ordered"}},
        {"resource": _task(id="ordered", status="cancelled"), "request": {"method": "PUT", "url": "Task/ordered"}},
        {"request": {"method": "GET", "url": "Task/ordered"}},
        {"request": {"method": "DELETE", "url": "Task/ordered"}},
        {"request": {"method": "GET", "url": "Task/ordered"}},
    ] + [{"resource": _task(), "request": {"method": "POST", "url": "Task"}} for _ in range(20)] + [
        {"request": {"method": "GET", "url": "Task?status=requested"}},
    ]
    r = client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR)
    assert r.status_code == 200
    out = r.json()["entry"]
    assert [e["response"]["status"][:3] for e in out[:6]] == ["201", "200", "200", "200", "200", "410"]
    assert out[1]["resource"]["meta"]["versionId"] == "1"
    assert out[3]["resource"]["status"] == "cancelled"
    assert all(e["response"]["status"] == "201 Created" for e in out[6:26])
    # The search comes after the 20 creates in request order, and sees them all.
    assert out[26]["resource"]["total"] == 20


def test_waves() -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _task(), "request": {"method": "POST", "url": "Task"}},
        {"resource": _task(), "request": {"method": "POST", "url": "Task"}},
        {"request": {"method": "GET", "url": "Task/a"}},
        {"request": {"method": "DELETE", "url": "Task/a"}},  # same resource: a new wave
        {"request": {"method": "GET", "url": "Task?status=requested"}},  # a search: alone
        {"request": {"method": "GET", "url": "Task/b"}},
        {"resource": {"resourceType": "Consent"}, "request": {"method": "POST", "url": "Consent"}},
        {"request": {"method": "GET", "url": "Task/c"}},
    ]}
    entries = parse_entries(bundle, BASE, 100, per_entry_errors=True)
    assert [[e.index for e in wave] for wave in waves(entries)] == [[0, 1, 2], [3], [4], [5], [6], [7]]


def test_batch_entries_log_no_httpx_lines(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    entries = [{"resource": _task(), "request": {"method": "POST", "url": "Task"}} for _ in range(5)]
    r = client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=FHIR)
    assert r.status_code == 200
    assert not [rec for rec in caplog.records if rec.name == "httpx" and "/fhir/Task" in rec.getMessage()]
