"""Checks of FHIR primitive values, built from the R4 JSON schema's primitive definitions.

A check returns None or (issue code, message). Beyond the schema: JSON numbers must be
integers where FHIR says integer (the schema only says "number"), dates must exist on the
calendar, strings may not hold control characters other than TAB/CR/LF, and `string` /
`markdown` follow FHIR's XML-derived rule (any characters, non-empty) rather than the
schema's `\\S`, which in Python and JavaScript would also reject NBSP and ideographic space.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Problem = tuple[str, str] | None
Check = Callable[[Any], Problem]

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# The schema's own base64 pattern (on Extension.valueBase64Binary) backtracks badly on long
# input; this is linear and accepts the same alphabet.
BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
INT32 = (-(2**31), 2**31 - 1)
DATED = {"date", "dateTime", "instant"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", Decimal: "number", str: "string",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _wrong(expected: str, value: Any) -> Problem:
    return ("structure", f"must be a JSON {expected}, not {_kind(value)}")


def _text(value: Any) -> Problem:
    if type(value) is not str:
        return _wrong("string", value)
    if not value:
        return ("structure", "must not be an empty string")
    if CONTROL.search(value):
        return ("value", "contains a control character (only TAB, CR and LF are allowed)")
    return None


def _calendar_ok(value: str) -> bool:
    if len(value) < 10:
        return True
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    return day <= calendar.monthrange(year, month)[1]


def _pattern_check(name: str, regex: re.Pattern[str]) -> Check:
    dated = name in DATED

    def check(value: Any) -> Problem:
        problem = _text(value)
        if problem is not None:
            return problem
        if regex.fullmatch(value) is None:
            return ("value", f"'{value[:64]}' is not a valid {name}")
        if dated and not _calendar_ok(value):
            return ("value", f"'{value[:64]}' is not a valid {name}: no such day")
        return None

    return check


def _boolean(value: Any) -> Problem:
    return None if type(value) is bool else _wrong("boolean", value)


def _decimal(value: Any) -> Problem:
    kind = type(value)
    if kind is int:
        return None
    if kind is Decimal:  # how request bodies decode (fhir_server.fhirjson): exact
        return None if value.is_finite() else ("value", "must be a finite number")
    if kind is float:
        return None if math.isfinite(value) else ("value", "must be a finite number")
    return _wrong("number", value)


def _integer_check(name: str, low: int) -> Check:
    def check(value: Any) -> Problem:
        if type(value) is not int:
            if type(value) in (float, Decimal):
                return ("value", f"{value} is not a valid {name} (no decimals allowed)")
            return _wrong("number", value)
        if not low <= value <= INT32[1]:
            return ("value", f"{value} is out of range for {name}")
        return None

    return check


def _base64(value: Any) -> Problem:
    problem = _text(value)
    if problem is None and BASE64.fullmatch(value) is None:
        return ("value", "is not valid base64")
    return problem


def _anchored(pattern: str) -> re.Pattern[str]:
    body = pattern.removeprefix("^").removesuffix("$")
    return re.compile(f"(?:{body})")


def build_checks(definitions: dict[str, Any]) -> dict[str, Check]:
    """One check per primitive type of the schema (definitions without properties)."""
    checks: dict[str, Check] = {}
    for name, definition in definitions.items():
        if "properties" in definition or "oneOf" in definition:
            continue
        if name == "boolean":
            checks[name] = _boolean
        elif name == "decimal":
            checks[name] = _decimal
        elif name in ("integer", "unsignedInt", "positiveInt"):
            low = {"integer": INT32[0], "unsignedInt": 0, "positiveInt": 1}[name]
            checks[name] = _integer_check(name, low)
        elif name == "base64Binary":
            checks[name] = _base64
        elif name in ("string", "markdown", "xhtml") or "pattern" not in definition:
            checks[name] = _text
        else:
            checks[name] = _pattern_check(name, _anchored(definition["pattern"]))
    return checks
