"""AuditEvents' search values are extracted through a memo (fhir_server/search/memo.py): the
values must be exactly what a plain extraction gives, for every event, whatever repeats."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import interaction_event
from fhir_server.config import Settings
from fhir_server.context import Principal, RequestContext
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


def _server_event(n: int) -> dict[str, Any]:
    # An event as the server writes it for a read: a new request id, time and meta each time.
    context = RequestContext(base_url=BASE, interaction="read", method="GET", url=f"{BASE}/Task/t1",
                             resource_type="Task", resource_id="t1", remote_addr="127.0.0.1",
                             principal=Principal(client_id="app", fhir_user="Practitioner/p1",
                                                 scopes=frozenset({"user/Task.rs"}), token_id="jti-1"))
    event = interaction_event(context, BASE, 200, datetime(2026, 12, 1, 10, 0, n % 60, tzinfo=UTC),
                              seen=[("Task", "t1", "1")], patients=[f"p{n % 3}"], consents=[])
    event["meta"] = {"versionId": "1", "lastUpdated": f"2026-12-01T10:00:{n % 60:02d}.{n:03d}Z"}
    return event


def test_a_servers_read_events_hit_the_memo_but_for_their_request_id_and_time() -> None:
    # The meta, the entities' types and roles and every reference repeat from one read to the
    # next; the request id (an identifier among the entities) and the time do not.
    engine = SearchEngine(Settings(base_url=BASE))
    memo = engine._memo["AuditEvent"]
    events = [_server_event(n) for n in range(60)]
    for event in events[:3]:
        engine.index_fields("AuditEvent", event)
    before = memo.hits
    for event in events[3:]:
        assert engine.index_fields("AuditEvent", event) == _plain(engine, event)
    per_event = (memo.hits - before) / len(events[3:])
    assert per_event >= 18, per_event  # 12 when keyed on whole top-level elements
