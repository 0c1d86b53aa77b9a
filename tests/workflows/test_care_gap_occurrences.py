"""The occurrences of an activity's schedule: windows and due times, and what a hostile or
odd schedule makes (never an exception, never thousands of gaps)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_server.operations.gaps import CLOSED, OPEN, PROSPECTIVE, Evidence, assess, occurrences

Doc = dict[str, Any]
AT = datetime(2026, 6, 15, tzinfo=UTC)


def _timing(repeat: Doc) -> Doc:
    return {"detail": {"status": "scheduled", "scheduledTiming": {"repeat": repeat}}}


def test_monthly_from_the_31st_keeps_to_the_calendar() -> None:
    found = list(occurrences(_timing({"boundsPeriod": {"start": "2026-01-31", "end": "2026-05-01"},
                                      "period": 1, "periodUnit": "mo"}), 0))
    assert [o.due.date().isoformat() for o in found] == ["2026-02-28", "2026-03-31", "2026-04-30", "2026-05-02"]
    assert found[0].start == datetime(2026, 1, 31, tzinfo=UTC) and found[-1].until is None


def test_a_repeat_every_minute_for_years_is_one_window() -> None:
    found = list(occurrences(_timing({"boundsPeriod": {"start": "2020-01-01", "end": "2030-01-01"},
                                      "period": 1, "periodUnit": "min"}), 0))
    assert len(found) == 1


def test_a_daily_repeat_without_end_stops_at_one_hundred() -> None:
    assert len(list(occurrences(_timing({"boundsPeriod": {"start": "2000-01-01"}, "period": 1,
                                         "periodUnit": "d"}), 0))) == 100


@pytest.mark.parametrize("detail", [
    {"scheduledTiming": {"event": ["not a date", 7, None]}},
    {"scheduledTiming": {"repeat": {"boundsPeriod": {"start": "2026-01-01"}, "period": -1, "periodUnit": "d"}}},
    {"scheduledTiming": {"repeat": {"boundsPeriod": {"start": "2026-01-01"}, "period": True, "periodUnit": "d"}}},
    {"scheduledTiming": {"repeat": {"boundsPeriod": {"start": "9999-12-31"}, "period": 1, "periodUnit": "a"}}},
    {"scheduledTiming": {"repeat": {"boundsPeriod": {"start": "0001-01-01"}, "period": 1.5, "periodUnit": "mo"}}},
    {"scheduledTiming": "every day"},
    {"scheduledString": "daily"},
    {"scheduledPeriod": {"start": "yesterday"}},
    {},
])
def test_odd_schedules_make_no_exception(detail: Doc) -> None:
    plan = {"id": "p", "status": "active", "activity": [{"detail": {"status": "scheduled", **detail}}, "x", {}]}
    gaps = assess(plan, [], AT)
    assert len(gaps) <= 1


def test_evidence_belongs_to_its_window() -> None:
    plan = {"id": "p", "status": "active", "activity": [_timing({
        "boundsPeriod": {"start": "2026-01-01", "end": "2026-12-31"}, "period": 1, "periodUnit": "mo"})]}
    done_in_march = Evidence("Observation/1", datetime(2026, 3, 10, tzinfo=UTC), frozenset())
    gaps = assess(plan, [done_in_march], AT)
    # Windows January … May have passed (due Feb 1 … Jun 1); June's is due on July 1.
    assert [g.status for g in gaps] == [OPEN, OPEN, CLOSED, OPEN, OPEN, PROSPECTIVE]
    assert gaps[2].closed_by == "Observation/1"
