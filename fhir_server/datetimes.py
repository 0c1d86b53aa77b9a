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


class DateFormatError(ValueError):
    pass


def _add_months(t: datetime, months: int) -> datetime:
    month = t.month - 1 + months
    return t.replace(year=t.year + month // 12, month=month % 12 + 1)


def parse_range(value: str) -> tuple[datetime, datetime]:
    """Returns [start, end) in UTC for a FHIR date/dateTime/instant; raises DateFormatError."""
    m = _DATE_RE.fullmatch(value.strip())
    if not m:
        raise DateFormatError(f"'{value[:64]}' is not a FHIR date, dateTime or instant")
    g = m.groupdict()
    if g["h"] is not None and g["tz"] is None:
        # FHIR: a dateTime with a time SHALL have a timezone; be lenient and read it as UTC.
        g["tz"] = "Z"
    tz: timezone = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = UTC if (hours, minutes) == (0, 0) else _fixed(sign * (hours * 60 + minutes))
    try:
        year = int(g["y"])
        if g["mo"] is None:
            start = datetime(year, 1, 1, tzinfo=tz)
            return start.astimezone(UTC), start.replace(year=year + 1).astimezone(UTC)
        month = int(g["mo"])
        if g["d"] is None:
            start = datetime(year, month, 1, tzinfo=tz)
            return start.astimezone(UTC), _add_months(start, 1).astimezone(UTC)
        day = int(g["d"])
        if g["h"] is None:
            start = datetime(year, month, day, tzinfo=tz)
            return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)
        hour, minute = int(g["h"]), int(g["mi"])
        if g["s"] is None:
            start = datetime(year, month, day, hour, minute, tzinfo=tz)
            return start.astimezone(UTC), (start + timedelta(minutes=1)).astimezone(UTC)
        second = min(int(g["s"]), 59)  # leap second 60 is read as 59
        frac = g["f"] or ""
        micro = int((frac + "000000")[:6])
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        step = timedelta(microseconds=10 ** max(0, 6 - len(frac))) if frac else timedelta(seconds=1)
        if frac and len(frac) >= 6:
            step = timedelta(microseconds=1)
        return start.astimezone(UTC), (start + step).astimezone(UTC)
    except ValueError as exc:
        raise DateFormatError(f"'{value[:64]}' is not a valid date: {exc}") from None


def _fixed(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


def parse_instant(value: str) -> datetime:
    """The start of the value's range: what `_since` means."""
    return parse_range(value)[0]
