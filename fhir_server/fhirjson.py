"""FHIR JSON in and out, keeping every decimal exactly as it was written.

FHIR says a decimal's precision is significant (datatypes.html#decimal): `12.50` is not
`12.5`. Parsing to float loses that, so resources are decoded with msgspec, which hands each
JSON number with a fraction or exponent to `Decimal` (integers stay `int`), and encoded with
orjson, which writes a Decimal's own text through `default` as a raw fragment. bench/codec.py
chose this pair by measurement (docs/performance.md, "JSON codec"). Stored resources are
kept as these bytes and reads answer them untouched, so the hot read path decodes nothing.

Use `loads`/`dumps` for resource content (request bodies, stored resources, anything that
is re-encoded into a response); plain orjson is fine for JSON that carries no FHIR decimals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import orjson

_DECODER = msgspec.json.Decoder(float_hook=Decimal)
# orjson refuses integers outside 64 bits; JSON (and a FHIR decimal) allows them.
_INT_RANGE = (-(2**63), 2**64 - 1)


class DecodeError(ValueError):
    """The bytes are not JSON (or nest too deeply to parse)."""


def loads(data: bytes | str) -> Any:
    """JSON -> Python with decimals as `Decimal` (exact, their text kept)."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from None
    except RecursionError:
        raise DecodeError("the JSON nests too deeply") from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, option: int = 0) -> bytes:
    """Python -> JSON bytes; a Decimal is written as its own text (`12.50` stays `12.50`)."""
    try:
        return orjson.dumps(value, default=_default, option=option)
    except orjson.JSONEncodeError as exc:
        if "Integer exceeds" not in str(exc):
            raise
    return orjson.dumps(_wide_ints(value), default=_default, option=option)


def _wide_ints(value: Any) -> Any:
    """A copy with integers beyond 64 bits as raw fragments (rare: only then is it walked)."""
    if isinstance(value, dict):
        return {k: _wide_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_ints(v) for v in value]
    if type(value) is int and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return orjson.Fragment(str(value))
    return value
