"""Regions are evaluated in Python where a query could not use an index (`matches`) or turned
into flat filters (`disjuncts`, `none_of`): both must agree with MongoDB itself. Checked
against the real embedded database on documents shaped like the stored ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import MongoClient

from fhir_server.consent.region import ALL, all_of, any_of, disjuncts, matches, none_of

LABEL = "sp._security|"
R = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"
N = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N"
DOCS: list[dict[str, Any]] = [
    {"_id": "a", "sp": {LABEL[3:]: R, "code": "x", "sent": {"s": datetime(2026, 10, 2, tzinfo=UTC)}}},
    {"_id": "b", "sp": {LABEL[3:]: [R, N], "code": ["x", "y"]}},
    {"_id": "c", "sp": {"code": "y", "sent": [{"s": datetime(2026, 9, 1, tzinfo=UTC)},
                                               {"s": datetime(2026, 11, 1, tzinfo=UTC)}]}},
    {"_id": "d/2", "id": "d", "sp": {}},
    {"_id": "e"},
]
OCTOBER = {"$gte": datetime(2026, 10, 1, tzinfo=UTC), "$lt": datetime(2026, 11, 1, tzinfo=UTC)}
REGIONS: list[dict[str, Any]] = [
    {LABEL: {"$in": [R]}},
    {LABEL: {"$nin": [R]}},
    {LABEL: R},
    {"sp.code": {"$ne": "x"}},
    {"sp.sent.s": OCTOBER},
    {"$or": [{"_id": "d"}, {"id": "d"}]},
    {"$nor": [{"sp.code": "y"}]},
    {"$and": [{"sp.code": "x"}, {"$or": [{LABEL: N}, {"sp.sent.s": OCTOBER}]}]},
    {"$or": [{"sp.code": "y"}, {"$nor": [{LABEL: {"$in": [R, N]}}]}]},
    ALL,
]


@pytest.fixture(scope="module")
def collection(mongo: MongoClient[dict[str, Any]]) -> Any:
    scratch = mongo["consent_region_test"]["docs"]
    scratch.delete_many({})
    scratch.insert_many([dict(d) for d in DOCS])
    yield scratch
    scratch.drop()


@pytest.mark.parametrize("region", REGIONS, ids=str)
def test_matches_agrees_with_the_database(collection: Any, region: dict[str, Any]) -> None:
    expected = {d["_id"] for d in collection.find(region)}
    assert {d["_id"] for d in DOCS if matches(region, d)} == expected


@pytest.mark.parametrize("region", REGIONS, ids=str)
def test_flat_forms_select_the_same_documents(collection: Any, region: dict[str, Any]) -> None:
    expected = {d["_id"] for d in collection.find(region)}
    parts = disjuncts(region)
    if parts is not None:
        assert all(not k.startswith("$") for part in parts for k in part)
        assert {d["_id"] for part in parts for d in collection.find(part)} == expected
    negated = none_of(region)
    assert {d["_id"] for d in collection.find(negated or {"_id": {"$in": []}})} == {d["_id"] for d in DOCS} - expected


def test_the_algebra_simplifies() -> None:
    assert all_of(ALL, {"a": 1}) == {"a": 1} and all_of(None, {"a": 1}) is None
    assert any_of(None, None) is None and any_of({"a": 1}, ALL) == ALL
    assert none_of({"a": {"$in": [1]}}) == {"a": {"$nin": [1]}} and none_of(ALL) is None
