"""Extreme but valid dates (years 0001 and 9999, timezones ±14:00) on every date-using
endpoint: search prefixes on a date parameter and on _lastUpdated, history _since and _at.

Each answers 200 (the range is clamped to the calendar Python can hold), never a 500, and
the keep-alive connection stays open for the next request.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import RunningServer

PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
EXTREMES = (
    "0001", "0001-01", "0001-01-01", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00+14:00", "0001-01-01T00:00:00.000+14:00",
    "9999", "9999-12", "9999-12-31", "9999-12-31T23:59:59+14:00", "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59-14:00", "9999-12-31T23:59:59.999-14:00",
)
# (path, parameter) pairs that take a date with a prefix.
SEARCHES = (
    ("/Appointment", "date"), ("/Patient", "birthdate"), ("/Task", "_lastUpdated"),
    ("/Task", "authored-on"),
)
HISTORIES = ("/_history", "/Task/_history")


class Connection:
    """One keep-alive HTTP/1.1 connection: a reset shows up as a new socket."""

    def __init__(self, server: RunningServer) -> None:
        url = urlsplit(server.settings.base_url)
        self.prefix = url.path
        self.conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)

    def get(self, path: str) -> tuple[int, dict]:
        self.conn.request("GET", self.prefix + path)
        sock = self.conn.sock
        response = self.conn.getresponse()
        body = json.loads(response.read())
        assert not response.will_close, f"{path}: the server closed the connection"
        assert self.conn.sock is sock
        return response.status, body


@pytest.fixture(scope="module")
def conn(server: RunningServer) -> Iterator[Connection]:
    c = Connection(server)
    # A few resources so the queries have something to compare against.
    for body in (
        {"resourceType": "Patient", "birthDate": "1970-01-01"},
        {"resourceType": "Task", "status": "requested", "intent": "order",
         "authoredOn": "2026-01-01T10:00:00Z"},
        {"resourceType": "Appointment", "status": "booked", "start": "2026-01-01T10:00:00Z",
         "end": "2026-01-01T10:30:00Z", "participant": [{"status": "accepted"}]},
    ):
        c.conn.request("POST", f"{c.prefix}/{body['resourceType']}", json.dumps(body),
                       {"content-type": "application/fhir+json"})
        response = c.conn.getresponse()
        response.read()
        assert response.status == 201
    yield c
    c.conn.close()


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("path", "param"), SEARCHES)
def test_search_prefix_at_calendar_ends(conn: Connection, path: str, param: str, prefix: str) -> None:
    for value in EXTREMES:
        status, body = conn.get(f"{path}?{param}={quote(prefix + value)}")
        assert status == 200, (prefix + value, body)
        assert body["resourceType"] == "Bundle"


@pytest.mark.parametrize("param", ("_since", "_at"))
@pytest.mark.parametrize("path", HISTORIES)
def test_history_at_calendar_ends(conn: Connection, path: str, param: str) -> None:
    for value in EXTREMES:
        status, body = conn.get(f"{path}?{param}={quote(value)}")
        assert status == 200, (value, body)
        assert body["type"] == "history"


def test_since_the_beginning_of_time_sees_everything(conn: Connection) -> None:
    status, body = conn.get("/Task/_history?_since=" + quote("0001-01-01T00:00:00+14:00"))
    assert status == 200
    assert len(body["entry"]) >= 1
    status, body = conn.get("/Task/_history?_since=" + quote("9999-12-31T23:59:59-14:00"))
    assert status == 200
    assert "entry" not in body


@pytest.mark.parametrize("value", ("0000", "2026-13-01", "2026-02-30", "2026-01-01T10:00+15:00",
                                   "10000-01-01"))
def test_really_invalid_dates_are_400(conn: Connection, value: str) -> None:
    for path in ("/Task/_history?_since=", "/Task?_lastUpdated=ap", "/Patient?birthdate=ap"):
        status, body = conn.get(path + quote(value))
        assert status == 400, (path, value, body)
        assert body["resourceType"] == "OperationOutcome"
