"""The route table hands each handler its FHIR interaction (restful-interaction codes):
what every interceptor sees in `context.interaction`, checked through the HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.api.route import INTERACTIONS, Route
from fhir_server.api.routes import ROUTES
from fhir_server.context import RequestContext
from fhir_server.hooks import Pointcut, hook
from tests.conftest import RunningServer, make_settings
from tests.helpers import wipe


class Recorder:
    """A deployment's interceptor noting the interaction (and operation) of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hook(Pointcut.INCOMING_REQUEST)
    def note(self, context: RequestContext) -> None:
        self.seen.append((context.interaction, context.attributes.get("operation")))


RECORDER = Recorder()


@pytest.fixture(scope="module")
def recording_server(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(make_settings(mongodb_uri, database="fhir_interactions"), [RECORDER]) as running:
        yield running


@pytest.fixture
def http(recording_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> Iterator[httpx.Client]:
    wipe(mongo[recording_server.settings.database])
    with httpx.Client(base_url=recording_server.settings.base_url, timeout=30) as client:
        assert client.put("/Patient/p", json={"resourceType": "Patient", "id": "p"}).status_code == 201
        RECORDER.seen.clear()
        yield client


def _interaction(http: httpx.Client, method: str, url: str, status: int, **kwargs: Any) -> tuple[str, Any]:
    RECORDER.seen.clear()
    response = http.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    assert len(RECORDER.seen) == 1
    return RECORDER.seen[0]


def _bundle(kind: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": {"resourceType": "Patient", "id": f"b-{kind}"},
         "request": {"method": "PUT", "url": f"Patient/b-{kind}"}}]}


@pytest.mark.parametrize(("method", "url", "status", "expected"), [
    ("GET", "/Patient/p", 200, ("read", None)),
    ("GET", "/Patient/p/_history/1", 200, ("vread", None)),
    ("GET", "/Patient/p/_history", 200, ("history-instance", None)),
    ("GET", "/Patient/_history", 200, ("history-type", None)),
    ("GET", "/_history", 200, ("history-system", None)),
    ("GET", "/Patient?_id=p", 200, ("search-type", None)),
    ("POST", "/Patient/_search", 200, ("search-type", None)),
    ("GET", "/?_type=Patient", 200, ("search-system", None)),
    ("GET", "/Patient/p/Task", 200, ("search-type", None)),
    ("GET", "/Patient/p/*", 200, ("search-system", None)),
    ("GET", "/Patient/p/$everything", 200, ("operation", "everything")),
    ("DELETE", "/Patient/p", 200, ("delete", None)),
])
def test_each_route_hands_its_interaction(http: httpx.Client, method: str, url: str, status: int,
                                          expected: tuple[str, Any]) -> None:
    assert _interaction(http, method, url, status) == expected


def test_writes_and_bundles(http: httpx.Client) -> None:
    body = {"resourceType": "Patient", "id": "p", "active": True}
    assert _interaction(http, "PUT", "/Patient/p", 200, json=body) == ("update", None)
    assert _interaction(http, "POST", "/Patient", 201, json={"resourceType": "Patient"}) == ("create", None)
    patch = [{"op": "add", "path": "/active", "value": False}]
    assert _interaction(http, "PATCH", "/Patient/p", 200, json=patch,
                        headers={"Content-Type": "application/json-patch+json"}) == ("patch", None)
    validate = _interaction(http, "POST", "/Patient/$validate", 200, json={"resourceType": "Patient"})
    assert validate == ("operation", "validate")
    assert _interaction(http, "POST", "/", 200, json=_bundle("transaction")) == ("transaction", None)
    # A batch runs each entry through the routes again: the Bundle's own request first.
    RECORDER.seen.clear()
    assert http.post("/", json=_bundle("batch")).status_code == 200
    assert RECORDER.seen == [("batch", None), ("update", None)]


def test_the_table_speaks_only_fhir_interaction_codes() -> None:
    for route in ROUTES:
        assert route.interaction in INTERACTIONS
        assert set(route.also) <= INTERACTIONS
    everything = [r for r in ROUTES if r.path.endswith("$everything")]
    assert [(r.interaction, r.operation) for r in everything] == [("operation", "everything")]
    with pytest.raises(ValueError, match="history"):
        Route(("GET",), "/x", ROUTES[0].handler, "history", "type")
