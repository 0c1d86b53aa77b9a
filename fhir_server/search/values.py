"""Search values: escaping, normalized strings, date ranges, numbers and prefixes.

The same functions normalize stored values (at write time) and query values (at read time),
so the two always meet in the same form.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from fhir_server.datetimes import shifted, to_utc
from fhir_server.errors import BadRequest

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MIN_DATE = datetime(1, 1, 1, tzinfo=UTC)
MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def split_unescaped(value: str, sep: str) -> list[str]:
    """Splits on `sep` where it is not escaped with a backslash (escapes are kept)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a string (stored and queried alike)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def prefix_upper(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return "\U0010ffff" * (len(prefix) + 1)
    following = ord(stripped[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be encoded: skip past them
        following = 0xE000
    return stripped[:-1] + chr(following)


def date_range(text: str, param: str | None = None) -> tuple[datetime, datetime]:
    """[start, end) of a FHIR date/dateTime/instant at its own precision (UTC when no zone)."""
    match = _DATE.fullmatch(text.strip()) if len(text) <= 40 else None
    if match is None:
        raise BadRequest(_bad_date(text, param), code="value")
    g = match.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            start = datetime(year, 1, 1, tzinfo=UTC)
            return start, _add_months(start, 12)
        month = int(g["m"])
        if g["d"] is None:
            start = datetime(year, month, 1, tzinfo=UTC)
            return start, _add_months(start, 1)
        day = int(g["d"])
        if g["H"] is None:
            start = datetime(year, month, day, tzinfo=UTC)
            return start, min(shifted(start, timedelta(days=1)), MAX_DATE)
        tz = UTC
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            if hours * 60 + minutes > 14 * 60 or minutes > 59:
                raise ValueError("FHIR timezones lie within -14:00..+14:00")
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        second = int(g["S"] or 0)
        fraction = g["f"] or ""
        micro = int((fraction + "000000")[:6]) if fraction else 0
        start = datetime(year, month, day, int(g["H"]), int(g["M"]), second, micro, tzinfo=tz)
        start = to_utc(start)
        if g["S"] is None:
            step = timedelta(minutes=1)
        elif not fraction:
            step = timedelta(seconds=1)
        else:
            step = timedelta(microseconds=max(1, 10 ** (6 - min(len(fraction), 6))))
        # MongoDB keeps milliseconds: round the bounds outward to them.
        start = start.replace(microsecond=start.microsecond // 1000 * 1000)
        end = shifted(start, max(step, timedelta(milliseconds=1)))
        return start, min(end, MAX_DATE)
    except (ValueError, OverflowError):
        raise BadRequest(_bad_date(text, param), code="value") from None


def _bad_date(text: str, param: str | None) -> str:
    where = f" for parameter '{param}'" if param else ""
    return f"'{text[:60]}' is not a valid FHIR date{where}"


def _add_months(start: datetime, months: int) -> datetime:
    total = start.month - 1 + months
    year = start.year + total // 12
    if year > 9999:
        return MAX_DATE
    return start.replace(year=year, month=total % 12 + 1)


def split_prefix(value: str) -> tuple[str, str]:
    """('ge', '2026-01-01') from 'ge2026-01-01'; 'eq' when there is no prefix."""
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "+-."):
        return value[:2], value[2:]
    return "eq", value


def parse_number(text: str, param: str) -> tuple[float, float, float]:
    """(value, low, high): the implicit range of a number at its precision (1.5 -> [1.45, 1.55))."""
    try:
        number = Decimal(text)
        if not number.is_finite() or len(text) > 40:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise BadRequest(f"'{text[:60]}' is not a number for parameter '{param}'",
                         code="value") from None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(number), float(number - half), float(number + half)
