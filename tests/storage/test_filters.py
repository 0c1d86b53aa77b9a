"""The repository ANDs access filters flat (SecantusDB scans on `$and`); flat must mean the
same as `$and`, which these tests check against the real database, array fields included."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient

from fhir_server.storage.records import _and

DOCS = [
    {"_id": "a", "compartments": {"Patient": ["p1"]}, "sp": {"status": "requested"}},
    {"_id": "b", "compartments": {"Patient": ["p1", "p2"]}, "sp": {"status": "completed"}},
    {"_id": "c", "compartments": {"Patient": ["p2"]}, "sp": {"status": "requested"}},
    {"_id": "d", "sp": {"status": "requested"}},
]

CASES: list[list[dict[str, Any]]] = [
    [{"_id": "a"}, {"compartments.Patient": "p1"}],
    [{"compartments.Patient": "p1"}, {"compartments.Patient": {"$nin": ["p2"]}}],
    [{"compartments.Patient": {"$in": ["p1", "p2"]}}, {"compartments.Patient": {"$nin": ["p2"]}}],
    [{"sp.status": "requested"}, {"$or": [{"_id": "a"}, {"_id": "c"}]}, {"compartments.Patient": "p2"}],
    [{"_id": {"$in": ["a", "b", "c"]}}, {"_id": {"$nin": ["b"]}}, {"compartments.Patient": "p1"}],
    [{"compartments.Patient": "p1"}, {"compartments.Patient": "p2"}],  # same operator twice
]


def test_merge_keeps_it_flat() -> None:
    assert _and({"_id": "a"}, {"compartments.Patient": "p1"}) == {"_id": "a", "compartments.Patient": "p1"}
    assert _and({"f": "p1"}, {"f": {"$nin": ["x"]}}) == {"f": {"$eq": "p1", "$nin": ["x"]}}
    assert "$and" in _and({"f": "p1"}, {"f": "p2"})  # two $eq cannot share one document
    assert _and(None, {}, {"x": 1}) == {"x": 1}


@pytest.mark.parametrize("parts", CASES)
def test_flat_means_the_same_as_and(mongo: MongoClient[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
    collection = mongo["filters_test"]["docs"]
    collection.delete_many({})
    collection.insert_many([dict(d) for d in DOCS])
    flat = {d["_id"] for d in collection.find(_and(*parts))}
    nested = {d["_id"] for d in collection.find({"$and": parts})}
    assert flat == nested
