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
