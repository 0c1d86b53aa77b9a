"""ISO 8601 durations, as the definitions file writes them (`PT2S`, `P3D`, `PT1H30M`).

Years and months are refused: their length depends on the calendar, and a time-out must mean
the same number of seconds whenever it starts.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?")


def parse_duration(text: str) -> timedelta:
    """`PT2S` → 2 seconds. ValueError names what is wrong."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        if isinstance(text, str) and re.fullmatch(r"P.*\d+[YM].*", text.split("T")[0]):
            raise ValueError(f"'{text}': years and months have no fixed length; use weeks or days")
        raise ValueError(f"'{text}' is not an ISO 8601 duration such as PT2S, PT15M or P3D")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return timedelta(**parts)
