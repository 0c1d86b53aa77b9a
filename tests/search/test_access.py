"""The read pipeline's rule holds for search: chains, _has, _include/_revinclude and totals
all pass the access filter (FILTER_QUERY) of the type they read, and CAN_SEE for what leaves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from interceptors.hooks import AccessQuery, Pointcut
from tests.conftest import RunningServer
from tests.search.conftest import Searcher


@pytest.fixture
def hidden(s: Searcher, server: RunningServer) -> Iterator[Searcher]:
    """Patient/secret is invisible: filtered from every query, and refused by CAN_SEE."""
    s.put({"resourceType": "Patient", "id": "secret", "name": [{"family": "Hidden"}]})
    s.put({"resourceType": "Patient", "id": "open", "name": [{"family": "Open"}]})
    for tid, pid in (("t-secret", "secret"), ("t-open", "open")):
        s.put({"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
               "for": {"reference": f"Patient/{pid}"}})
    hooks = server.server.config.app.state.services.hooks  # type: ignore[attr-defined]

    def hide(context: Any, resource_type: str, query: AccessQuery) -> None:
        if resource_type == "Patient":
            query.add({"_id": {"$ne": "secret"}})

    def can_see(context: Any, resource: dict[str, Any]) -> bool:
        return resource.get("id") != "t-secret"

    saved = {p: list(hooks._hooks[p]) for p in (Pointcut.FILTER_QUERY, Pointcut.CAN_SEE)}
    hooks.add(Pointcut.FILTER_QUERY, hide, 1)
    hooks.add(Pointcut.CAN_SEE, can_see, 1)
    try:
        yield s
    finally:
        hooks._hooks.update(saved)


def test_hidden_resources_stay_hidden(hidden: Searcher) -> None:
    assert hidden.idset("/Patient") == {"open"}
    assert hidden.bundle("/Patient?_total=accurate")["total"] == 1
    # A chain through a hidden Patient finds nothing (no inference of its name).
    assert hidden.idset("/Task?patient.name=hidden") == set()
    assert hidden.idset("/Task?patient.name=open") == {"t-open"}
    # _has through a Task the client may not see (CAN_SEE) reveals nothing either.
    assert hidden.idset("/Patient?_has:Task:patient:status=requested") == {"open"}
    b = hidden.bundle("/Task?_include=Task:patient")
    included = {e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] == "include"}
    assert included == {"open"}
    assert {e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] == "match"} == {
        "t-open"}
    b = hidden.bundle("/Patient?_revinclude=Task:patient")
    assert {e["resource"]["id"] for e in b["entry"]} == {"open", "t-open"}
