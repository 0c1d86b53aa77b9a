"""Date parameters: every prefix, implicit precision ranges, periods, _lastUpdated, errors."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.search.conftest import Searcher


@pytest.fixture
def appts(s: Searcher) -> Searcher:
    def appt(aid: str, start: str, end: str) -> None:
        s.put({"resourceType": "Appointment", "id": aid, "status": "booked", "start": start,
               "end": end, "participant": [{"actor": {"reference": "Practitioner/x"},
                                            "status": "accepted"}]})

    appt("a1", "2026-01-10T09:00:00Z", "2026-01-10T09:30:00Z")
    appt("a2", "2026-01-31T23:30:00Z", "2026-02-01T00:30:00Z")
    appt("a3", "2026-02-15T10:00:00+02:00", "2026-02-15T11:00:00+02:00")
    s.put({"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
           "subject": {"reference": "Patient/p"},
           "period": {"start": "2026-01-01", "end": "2026-03-31"}})
    s.put({"resourceType": "CarePlan", "id": "cp2", "status": "active", "intent": "plan",
           "subject": {"reference": "Patient/p"}, "period": {"start": "2026-06-01"}})
    return s


@pytest.mark.parametrize(("query", "expected"), [
    ("date=2026-01-10", {"a1"}),
    ("date=2026-01", {"a1", "a2"}),
    ("date=2026", {"a1", "a2", "a3"}),
    ("date=eq2026-02-15T08:00:00Z", {"a3"}),
    ("date=2026-02-15T10:00:00%2B02:00", {"a3"}),
    ("date=ne2026-01", {"a3"}),
    ("date=gt2026-01-10", {"a2", "a3"}),
    ("date=lt2026-01-31", {"a1"}),
    ("date=ge2026-01-31", {"a2", "a3"}),
    ("date=le2026-01-31", {"a1", "a2"}),
    ("date=sa2026-01-10", {"a2", "a3"}),
    ("date=eb2026-02", {"a1", "a2"}),
    ("date=ge2026-01-01&date=lt2026-02-01", {"a1", "a2"}),
    ("date=lt2026-01-10,gt2026-02-01", {"a3"}),
])
def test_appointment_date(appts: Searcher, query: str, expected: set[str]) -> None:
    assert appts.idset(f"/Appointment?{query}") == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("date=2026-02-01", set()),  # eq: the period must lie within the day
    ("date=2026", {"cp1"}),  # cp2 has no end: not within 2026
    ("date=ge2026-02-01", {"cp1", "cp2"}),
    ("date=le2026-02-01", {"cp1"}),
    ("date=sa2026-04-01", {"cp2"}),
    ("date=eb2026-04-01", {"cp1"}),
    ("date=gt2030-01-01", {"cp2"}),
])
def test_period(appts: Searcher, query: str, expected: set[str]) -> None:
    assert appts.idset(f"/CarePlan?{query}") == expected


def test_approximately(s: Searcher) -> None:
    # ap: within 10% of the distance from now (at least a day) of the value.
    today = dt.datetime.now(dt.UTC).date()
    for aid, days in (("near", 0), ("week", 7), ("far", 200)):
        s.put({"resourceType": "Appointment", "id": aid, "status": "proposed",
               "start": f"{today + dt.timedelta(days=days)}T12:00:00Z",
               "participant": [{"actor": {"reference": "Patient/p"}, "status": "needs-action"}]})
    assert s.idset(f"/Appointment?date=ap{today}") == {"near"}
    assert s.idset(f"/Appointment?date=ap{today + dt.timedelta(days=195)}") == {"far"}


def test_last_updated(appts: Searcher) -> None:
    today = dt.datetime.now(dt.UTC).date()
    assert appts.idset(f"/Appointment?_lastUpdated=ge{today - dt.timedelta(days=1)}") == {
        "a1", "a2", "a3"}
    assert appts.idset(f"/Appointment?_lastUpdated=lt{today - dt.timedelta(days=1)}") == set()
    assert appts.idset("/Appointment?_lastUpdated=gt2100-01-01") == set()


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "xx2026", "ge", "2026-01-01T25:00",
                                 "2026-02-30"])
def test_malformed_date_is_400(appts: Searcher, bad: str) -> None:
    assert "date" in appts.error(f"/Appointment?date={bad}")
