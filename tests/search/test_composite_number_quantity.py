"""Composite (DocumentReference relationship) over HTTP; number and quantity, which no R4
parameter of a stored type uses, through custom SearchParameters run on the real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from fhir_server.config import Settings
from fhir_server.search import SearchEngine
from tests.search.conftest import Searcher


def doc_ref(did: str, code: str, target: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "id": did, "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
            "relatesTo": [{"code": code, "target": {"reference": target}}]}


def test_composite(s: Searcher) -> None:
    s.put({"resourceType": "DocumentReference", "id": "orig", "status": "current",
           "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]})
    s.put(doc_ref("d1", "replaces", "DocumentReference/orig"))
    s.put(doc_ref("d2", "appends", "DocumentReference/orig"))
    assert s.idset("/DocumentReference?relationship=replaces$DocumentReference/orig") == {"d1"}
    assert s.idset("/DocumentReference?relationship=appends$DocumentReference/orig,"
                   "replaces$DocumentReference/x") == {"d2"}
    assert s.idset("/DocumentReference?relation=appends") == {"d2"}
    assert "joined by $" in s.error("/DocumentReference?relationship=replaces")


CUSTOM = [
    {"resourceType": "SearchParameter", "url": "http://example.org/sp/task-input-number",
     "name": "InputNumber", "status": "active", "code": "input-number", "base": ["Task"],
     "type": "number", "expression": "Task.input.value.ofType(integer)",
     "description": "An integer input"},
    {"resourceType": "SearchParameter", "url": "http://example.org/sp/task-input-quantity",
     "name": "InputQuantity", "status": "active", "code": "input-quantity", "base": ["Task"],
     "type": "quantity", "expression": "(Task.input.value as Quantity)",
     "description": "A quantity input"},
]


def _task(tid: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
            "input": [{"type": {"text": "x"}, **value}]}


@pytest.fixture
def engine(tmp_path: Path) -> SearchEngine:
    (tmp_path / "custom.json").write_text(json.dumps({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": r} for r in CUSTOM]}))
    return SearchEngine(Settings(profiles_dir=tmp_path))


def _run(engine: SearchEngine, mongo: MongoClient[dict[str, Any]], query: str) -> set[str]:
    collection = mongo["fhir_search_unit"]["Task"]
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    parsed = engine.parse("Task", params)  # type: ignore[arg-type]
    return {d["_id"] for d in collection.find(parsed.filter, {"_id": 1})}


def test_number_and_quantity(engine: SearchEngine, mongo: MongoClient[dict[str, Any]]) -> None:
    resources = [
        _task("n1", {"valueInteger": 5}), _task("n2", {"valueInteger": 100}),
        _task("q1", {"valueQuantity": {"value": 5.4, "system": "http://unitsofmeasure.org",
                                       "code": "mg"}}),
        _task("q2", {"valueQuantity": {"value": 6, "unit": "g"}}),
    ]
    collection = mongo["fhir_search_unit"]["Task"]
    collection.delete_many({})
    collection.insert_many([{"_id": r["id"], "del": False, "sp": engine.index_fields("Task", r)}
                            for r in resources])
    assert _run(engine, mongo, "input-number=5") == {"n1"}
    assert _run(engine, mongo, "input-number=gt5") == {"n2"}
    assert _run(engine, mongo, "input-number=le100") == {"n1", "n2"}
    assert _run(engine, mongo, "input-number=ne5") == {"n2", "q1", "q2"}
    assert _run(engine, mongo, "input-number=ap95") == {"n2"}
    assert _run(engine, mongo, "input-quantity=5.4") == {"q1"}
    assert _run(engine, mongo, "input-quantity=5") == {"q1"}  # 5 means [4.5, 5.5)
    assert _run(engine, mongo, "input-quantity=5.4|http://unitsofmeasure.org|mg") == {"q1"}
    assert _run(engine, mongo, "input-quantity=ge5||g") == {"q2"}
    assert _run(engine, mongo, "input-quantity=lt10||mg") == {"q1"}
    assert _run(engine, mongo, "input-quantity=gt6") == set()
    for bad in ("input-number=abc", "input-number=gt", "input-quantity=5|mg"):
        with pytest.raises(Exception, match="input"):
            _run(engine, mongo, bad)
