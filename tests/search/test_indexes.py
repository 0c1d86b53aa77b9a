"""The worklist filters the engine builds are served from the declared indexes (explain)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.config import Settings
from fhir_server.search import SearchEngine


@pytest.mark.parametrize(("rtype", "params", "index"), [
    ("Task", [("owner", "Practitioner/x"), ("status", "requested,in-progress")],
     "s_sp_owner_sp_status_ts_d"),
    ("CarePlan", [("patient", "Patient/p"), ("status", "active")], "s_sp_patient_sp_status"),
    ("Communication", [("recipient", "Practitioner/x")], "s_sp_recipient_sp_sent_s_d__id_d"),
    ("Patient", [("identifier", "http://mrn|1")], "s_sp_identifier|"),
    ("Task", [("patient", "Patient/a,Patient/b")], "s_sp_patient"),
    # Sparse (a Task without the reference writes no entry), still used for values.
    ("Task", [("focus", "ServiceRequest/a")], "s_sp_focus_sparse"),
    ("Task", [("requester", "Practitioner/a,Practitioner/b")], "s_sp_requester_sparse"),
    ("Task", [("based-on", "ServiceRequest/a")], "s_sp_based-on_sparse"),
])
def test_worklists_use_indexes(
    client: httpx.Client, mongo: MongoClient[dict[str, Any]], settings: Settings,
    rtype: str, params: list[tuple[str, str]], index: str,
) -> None:
    engine = SearchEngine(settings)
    query = engine.parse(rtype, params)
    plan = mongo[settings.database][rtype].find(query.filter).explain()
    stage = plan["queryPlanner"]["winningPlan"]
    names = []
    while stage:
        names.append(stage.get("indexName"))
        stage = stage.get("inputStage")
    assert index in names, plan["queryPlanner"]["winningPlan"]


def test_tasks_rarely_set_references_are_indexed_sparse(
        client: httpx.Client, mongo: MongoClient[dict[str, Any]], settings: Settings) -> None:
    """A Task without focus, requester or basedOn writes no entry in their indexes, and a
    search for the Tasks without one (`:missing=true`) still finds exactly them."""
    indexes = {ix["name"]: ix for ix in mongo[settings.database]["Task"].list_indexes()}
    for name in ("s_sp_focus_sparse", "s_sp_requester_sparse", "s_sp_based-on_sparse"):
        assert indexes[name].get("sparse") is True
    assert not {"s_sp_focus", "s_sp_requester", "s_sp_based-on"} & set(indexes)
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    plain = client.post("/Task", json=task).json()["id"]
    focused = client.post("/Task", json={**task, "focus": {"reference": "ServiceRequest/s1"}}).json()["id"]
    for query, expected in (("focus:missing=true", [plain]), ("focus:missing=false", [focused]),
                            ("focus=ServiceRequest/s1", [focused])):
        found = client.get(f"/Task?{query}").json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == expected, query
