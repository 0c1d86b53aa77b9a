"""The read pipeline's rule holds for search: chains, _has, _include/_revinclude and totals
all pass the access filter (FILTER_QUERY) of the type they read, and CAN_SEE for what leaves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.hooks import AccessQuery, Pointcut, hook
from tests.conftest import RunningServer, make_settings
from tests.helpers import wipe
from tests.search.conftest import Searcher


class Hider:
    """A deployment's own interceptor: Patient/secret is filtered from every query, and
    Task/t-secret refused at CAN_SEE."""

    @hook(Pointcut.FILTER_QUERY)
    def hide(self, context: Any, resource_type: str, query: AccessQuery) -> None:
        if resource_type == "Patient":
            query.add({"_id": {"$ne": "secret"}})

    @hook(Pointcut.CAN_SEE)
    def can_see(self, context: Any, resource: dict[str, Any]) -> bool:
        return resource.get("id") != "t-secret"


@pytest.fixture(scope="module")
def hiding_server(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(make_settings(mongodb_uri, database="fhir_access"), [Hider()]) as running:
        yield running


@pytest.fixture
def hidden(hiding_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> Iterator[Searcher]:
    wipe(mongo[hiding_server.settings.database])
    with httpx.Client(base_url=hiding_server.settings.base_url, timeout=30) as client:
        s = Searcher(client)
        s.put({"resourceType": "Patient", "id": "secret", "name": [{"family": "Hidden"}]})
        s.put({"resourceType": "Patient", "id": "open", "name": [{"family": "Open"}]})
        for tid, pid in (("t-secret", "secret"), ("t-open", "open")):
            s.put({"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
                   "for": {"reference": f"Patient/{pid}"}})
        yield s


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
