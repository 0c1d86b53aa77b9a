"""SMART scopes enforced on the FHIR API itself: every path by which data leaves."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.security.conftest import Mint

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


@pytest.fixture
def world(secure: Callable[..., httpx.Client], mint: Mint) -> dict[str, str]:
    """Two patients, a task for each, a completed task for P1, and a practitioner."""
    admin = secure(mint("system/*.cruds"))
    ids: dict[str, str] = {}
    for name in ("p1", "p2"):
        r = admin.put(f"/Patient/{name}", json={"resourceType": "Patient", "id": name})
        assert r.status_code == 201, r.text
        ids[f"task_{name}"] = admin.post("/Task", json={**TASK, "for": {"reference": f"Patient/{name}"}}).json()["id"]
    ids["done_p1"] = admin.post("/Task", json={**TASK, "status": "completed",
                                               "for": {"reference": "Patient/p1"}}).json()["id"]
    ids["dr"] = admin.post("/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    return ids


def _ids(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome"}


def test_no_token_or_bad_token_is_401(secure: Callable[..., httpx.Client], world: dict[str, str]) -> None:
    for client in (secure(), secure("not-a-jwt"), secure("eyJhbGciOiJub25lIn0.eyJzY29wZSI6InN5c3RlbS8qLmNydWRzIn0.")):
        r = client.get(f"/Task/{world['task_p1']}")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["resourceType"] == "OperationOutcome"
        assert client.get("/Task").status_code == 401
        assert client.post("/Task", json=TASK).status_code == 401


def test_discovery_needs_no_token(secure: Callable[..., httpx.Client]) -> None:
    anonymous = secure()
    cs = anonymous.get("/metadata").json()
    security = cs["rest"][0]["security"]
    oauth = next(e for e in security["extension"]
                 if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
    assert {x["url"] for x in oauth["extension"]} >= {"authorize", "token"}
    conf = anonymous.get("/.well-known/smart-configuration")
    assert conf.status_code == 200
    assert "permission-v2" in conf.json()["capabilities"]


def test_patient_scope_confines_to_compartment(secure: Callable[..., httpx.Client], mint: Mint,
                                               world: dict[str, str]) -> None:
    app = secure(mint("patient/Task.rs", patient="p1"))
    assert app.get(f"/Task/{world['task_p1']}").status_code == 200
    assert app.get(f"/Task/{world['task_p2']}").status_code == 404
    assert _ids(app.get("/Task").json()) == {world["task_p1"], world["done_p1"]}
    # History of another patient's task, or of the type, shows nothing of theirs.
    assert app.get(f"/Task/{world['task_p2']}/_history").json().get("entry") is None
    history_ids = {e["resource"]["id"] for e in app.get("/Task/_history").json().get("entry", [])}
    assert world["task_p2"] not in history_ids and world["task_p1"] in history_ids
    # No scope for Patient or Practitioner; no write scope.
    assert app.get("/Patient/p1").status_code == 403
    assert app.get(f"/Practitioner/{world['dr']}").status_code == 403
    assert app.post("/Task", json={**TASK, "for": {"reference": "Patient/p1"}}).status_code == 403


def test_write_scope_does_not_imply_read(secure: Callable[..., httpx.Client], mint: Mint,
                                         world: dict[str, str]) -> None:
    writer = secure(mint("user/Task.cu"))
    created = writer.post("/Task", json=TASK, headers={"Prefer": "return=minimal"})
    assert created.status_code == 201
    assert writer.get(f"/Task/{world['task_p1']}").status_code == 403
    assert writer.delete(f"/Task/{world['task_p1']}").status_code == 403


def test_v1_scopes(secure: Callable[..., httpx.Client], mint: Mint, world: dict[str, str]) -> None:
    reader = secure(mint("user/*.read"))
    assert reader.get(f"/Task/{world['task_p2']}").status_code == 200
    assert reader.get("/Patient/p2").status_code == 200
    assert reader.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2", "active": True}).status_code == 403
    writer = secure(mint("user/*.write"))
    assert writer.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2", "active": True}).status_code == 200


def test_granular_scope_narrows_search(secure: Callable[..., httpx.Client], mint: Mint,
                                       world: dict[str, str]) -> None:
    app = secure(mint("user/Task.rs?status=requested"))
    assert _ids(app.get("/Task").json()) == {world["task_p1"], world["task_p2"]}
    assert app.get(f"/Task/{world['done_p1']}").status_code == 404


def test_batch_entries_each_checked(secure: Callable[..., httpx.Client], mint: Mint,
                                    world: dict[str, str]) -> None:
    app = secure(mint("patient/Task.rs", patient="p1"))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Task/{world['task_p1']}"}},
        {"request": {"method": "GET", "url": f"Task/{world['task_p2']}"}},
        {"request": {"method": "GET", "url": "Patient/p2"}},
        {"request": {"method": "POST", "url": "Task"}, "resource": TASK},
    ]}
    r = app.post("", json=bundle)
    assert r.status_code == 200
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses[0] == "200"
    assert statuses[1] in ("403", "404")
    assert statuses[2] == "403"
    assert statuses[3] in ("403", "401")


def test_transaction_write_needs_write_scope(secure: Callable[..., httpx.Client], mint: Mint) -> None:
    reader = secure(mint("user/*.rs"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Task"}, "resource": TASK}]}
    assert reader.post("", json=bundle).status_code == 403
    assert reader.get("/Task", params={"_summary": "count"}).json()["total"] == 0


def test_patient_write_scope_stays_in_compartment(secure: Callable[..., httpx.Client], mint: Mint,
                                                  world: dict[str, str]) -> None:
    app = secure(mint("patient/Task.cru", patient="p1"))
    assert app.post("/Task", json={**TASK, "for": {"reference": "Patient/p1"}}).status_code == 201
    assert app.post("/Task", json={**TASK, "for": {"reference": "Patient/p2"}}).status_code == 403
    # Overwriting another patient's task (hidden from this token) is refused, not retried.
    hijack = {**TASK, "id": world["task_p2"], "for": {"reference": "Patient/p1"}}
    assert app.put(f"/Task/{world['task_p2']}", json=hijack).status_code == 403
    admin = secure(mint("system/*.rs"))
    assert admin.get(f"/Task/{world['task_p2']}").json()["for"]["reference"] == "Patient/p2"
