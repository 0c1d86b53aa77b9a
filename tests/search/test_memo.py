"""AuditEvents' search values are extracted through a memo (fhir_server/search/memo.py): the
values must be exactly what a plain extraction gives, for every event, whatever repeats."""

from __future__ import annotations

import copy
import json
from typing import Any

from fhir_server.config import Settings
from fhir_server.search import SearchEngine
from fhir_server.search.extract import Extractor
from fhir_server.search.memo import MemoExtractor
from tests.conftest import EXAMPLES_DIR

BASE = "http://127.0.0.1:8080/fhir"


def _examples() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*udit*vent*.json"))]


def _plain(engine: SearchEngine, resource: dict[str, Any]) -> dict[str, Any]:
    return Extractor(BASE).extract(engine._params["AuditEvent"], resource)


def test_the_memo_gives_what_a_plain_extraction_gives() -> None:
    engine = SearchEngine(Settings(base_url=BASE))
    memo = engine._memo["AuditEvent"]
    assert isinstance(memo, MemoExtractor)
    events = _examples()
    assert len(events) >= 8
    # Each example, then variants sharing some parts with an earlier one (memo hits) and
    # differing in others (agent, entity, time): every answer equals the plain one.
    variants = []
    for i, event in enumerate(events):
        other = events[(i + 1) % len(events)]
        mixed = copy.deepcopy(event)
        mixed["entity"] = copy.deepcopy(other.get("entity", []))
        mixed["recorded"] = f"2026-12-01T10:00:0{i % 10}.123Z"
        variants.append(mixed)
        moved = copy.deepcopy(event)
        for agent in moved.get("agent", []):
            agent["who"] = {"reference": f"Practitioner/p{i}"}
        variants.append(moved)
    for resource in [*events, *events, *variants, *variants]:
        assert engine.index_fields("AuditEvent", resource) == _plain(engine, resource)
    assert memo.hits > 0


def test_what_the_memo_hands_out_is_the_callers_own() -> None:
    engine = SearchEngine(Settings(base_url=BASE))
    event = _examples()[0]
    first = engine.index_fields("AuditEvent", event)
    for value in first.values():
        if isinstance(value, list):
            value.append("changed by the caller")
    assert engine.index_fields("AuditEvent", event) == _plain(engine, event)
