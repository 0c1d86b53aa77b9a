"""FHIR date, dateTime and instant values as the time ranges they denote.

A FHIR date is as precise as it is written: "2026" is the whole year, "2026-03-01T10:00Z"
one minute... This module turns such a value into the half-open range [start, end) in UTC
that search prefixes and history's `_since`/`_at` compare against.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


# The instants Python (and so every range here) can represent. FHIR allows years 0001-9999
# in any timezone, so a range that starts before 0001-01-01T00:00Z or ends after the end of
# 9999 in UTC is clamped to these: "since 0001-01-01T00:00+14:00" means "since the beginning".
MIN_UTC = datetime.min.replace(tzinfo=UTC)
MAX_UTC = datetime.max.replace(tzinfo=UTC)


class DateFormatError(ValueError):
    pass


def to_utc(t: datetime) -> datetime:
    """`t` in UTC, clamped to [MIN_UTC, MAX_UTC] at the ends of the calendar."""
    try:
        return t.astimezone(UTC)
    except OverflowError:
        return MIN_UTC if t.year == 1 else MAX_UTC


def shifted(t: datetime, delta: timedelta) -> datetime:
    """`t + delta`, clamped to [MIN_UTC, MAX_UTC] instead of raising OverflowError."""
    try:
        return t + delta
    except OverflowError:
        return MAX_UTC if delta > timedelta(0) else MIN_UTC


def _add_months(t: datetime, months: int) -> datetime:
    month = t.month - 1 + months
    year = t.year + month // 12
    if year > MAX_UTC.year:
        return MAX_UTC
    return t.replace(year=year, month=month % 12 + 1)


def parse_range(value: str) -> tuple[datetime, datetime]:
    """Returns [start, end) in UTC for a FHIR date/dateTime/instant; raises DateFormatError."""
    m = _DATE_RE.fullmatch(value.strip())
    if not m:
        raise DateFormatError(f"'{value[:64]}' is not a FHIR date, dateTime or instant")
    g = m.groupdict()
    if g["h"] is not None and g["tz"] is None:
        # FHIR: a dateTime with a time SHALL have a timezone; be lenient and read it as UTC.
        g["tz"] = "Z"
    try:
        tz: timezone = UTC
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            if hours * 60 + minutes > 14 * 60 or minutes > 59:
                raise ValueError(f"timezone {g['tz']} is outside -14:00..+14:00")
            tz = UTC if (hours, minutes) == (0, 0) else _fixed(sign * (hours * 60 + minutes))
        year = int(g["y"])
        if g["mo"] is None:
            start = datetime(year, 1, 1, tzinfo=tz)
            return to_utc(start), to_utc(_add_months(start, 12))
        month = int(g["mo"])
        if g["d"] is None:
            start = datetime(year, month, 1, tzinfo=tz)
            return to_utc(start), to_utc(_add_months(start, 1))
        day = int(g["d"])
        if g["h"] is None:
            start = datetime(year, month, day, tzinfo=tz)
            return to_utc(start), to_utc(shifted(start, timedelta(days=1)))
        hour, minute = int(g["h"]), int(g["mi"])
        if g["s"] is None:
            start = datetime(year, month, day, hour, minute, tzinfo=tz)
            return to_utc(start), to_utc(shifted(start, timedelta(minutes=1)))
        second = min(int(g["s"]), 59)  # leap second 60 is read as 59
        frac = g["f"] or ""
        micro = int((frac + "000000")[:6])
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        step = timedelta(microseconds=10 ** max(0, 6 - len(frac))) if frac else timedelta(seconds=1)
        if frac and len(frac) >= 6:
            step = timedelta(microseconds=1)
        return to_utc(start), to_utc(shifted(start, step))
    except ValueError as exc:
        raise DateFormatError(f"'{value[:64]}' is not a valid date: {exc}") from None


def _fixed(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


def parse_instant(value: str) -> datetime:
    """The start of the value's range: what `_since` means."""
    return parse_range(value)[0]
