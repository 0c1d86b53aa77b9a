"""JSON codec candidates for FHIR resources: decode + encode cost and whether decimals survive.

    .venv/bin/python bench/codec.py [--rounds 7] [--seconds 0.3]

FHIR decimals keep their precision (`12.50` is not `12.5`), which a float-parsing decoder
loses. Each candidate decodes a resource's bytes and encodes the result again, as a write
does (request body -> validated dict -> stored bytes). Per resource it prints the median
over interleaved rounds of CPU microseconds per decode+encode (on-CPU time from
/proc/self/schedstat, so other processes on a noisy machine do not count), the ratio to the
lossy orjson baseline measured in the same rounds, and whether `12.50` came back as written.

Candidates (encode is orjson unless named):
  orjson         orjson.loads + orjson.dumps: the baseline; loses decimal precision
  json+Decimal   json.loads(parse_float=Decimal) + orjson.dumps(default=Fragment(str(d)))
  msgspec+Decimal msgspec.json.Decoder(float_hook=Decimal) + orjson.dumps(default=...)
  json+textfloat json.loads(parse_float=TextFloat): a float subclass that keeps its text
  msgspec+textfloat msgspec with float_hook=TextFloat
  orjson+rescan  orjson.loads; walk the result, and only if it holds a float decode again
                 with json+Decimal (fast when there are no decimals)
  msgspec both   msgspec decode (float_hook=Decimal) and msgspec encode
                 (decimal_format="number"); the server embeds stored bytes with
                 orjson.Fragment, so this is for reference
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server import fhirjson  # noqa: E402

EXAMPLES = ROOT / "tests" / "fixtures" / "examples"

TYPICAL_TASK = (
    b'{"resourceType":"Task","status":"requested","intent":"order","priority":"routine",'
    b'"description":"Call the patient about the cardiology referral",'
    b'"for":{"reference":"Patient/p1"},"owner":{"reference":"Practitioner/dr1"},'
    b'"requester":{"reference":"PractitionerRole/pr1"},"authoredOn":"2026-11-01T10:00:00Z",'
    b'"identifier":[{"system":"urn:bench","value":"t"}],'
    b'"meta":{"versionId":"1","lastUpdated":"2026-11-01T10:00:00.123Z"},'
    b'"code":{"coding":[{"system":"http://fhir.care-coord.example/CodeSystem/'
    b'coordination-task-code","code":"referral"}]}}'
)
# A Task with decimals (inputs and outputs as Quantity / valueDecimal).
DECIMAL_TASK = (
    TYPICAL_TASK[:-1]
    + b',"input":[{"type":{"text":"dose"},"valueQuantity":{"value":12.50,"unit":"mg"}},'
    b'{"type":{"text":"weight"},"valueDecimal":70.0},{"type":{"text":"ratio"},"valueDecimal":0.333}],'
    b'"output":[{"type":{"text":"score"},"valueDecimal":1.10}]}'
)


class TextFloat(float):
    """A float that remembers how it was written."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> TextFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


def _fragment(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, TextFloat):
        return orjson.Fragment(value.text)
    raise TypeError


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif type(node) is float:
            return True
    return False


_MSGSPEC_DECIMAL = msgspec.json.Decoder(float_hook=Decimal)
_MSGSPEC_TEXT = msgspec.json.Decoder(float_hook=TextFloat)
_MSGSPEC_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _rescan(data: bytes) -> Any:
    value = orjson.loads(data)
    return json.loads(data, parse_float=Decimal) if _has_float(value) else value


CANDIDATES: dict[str, Callable[[bytes], bytes]] = {
    "orjson": lambda b: orjson.dumps(orjson.loads(b)),
    "json+Decimal": lambda b: orjson.dumps(json.loads(b, parse_float=Decimal), default=_fragment),
    "msgspec+Decimal": lambda b: orjson.dumps(_MSGSPEC_DECIMAL.decode(b), default=_fragment),
    "json+textfloat": lambda b: orjson.dumps(json.loads(b, parse_float=TextFloat), default=_fragment),
    "msgspec+textfloat": lambda b: orjson.dumps(_MSGSPEC_TEXT.decode(b), default=_fragment),
    "orjson+rescan": lambda b: orjson.dumps(_rescan(b), default=_fragment),
    "msgspec both": lambda b: _MSGSPEC_ENCODER.encode(_MSGSPEC_DECIMAL.decode(b)),
    "fhirjson (ours)": lambda b: fhirjson.dumps(fhirjson.loads(b)),
}


def _cpu_ns() -> int:
    """Nanoseconds this process has spent on a CPU (first field of /proc/self/schedstat)."""
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[0])


def _timed(fn: Callable[[bytes], bytes], data: bytes, seconds: float) -> float:
    """CPU microseconds per call, over about `seconds` of wall time."""
    calls, start_cpu, deadline = 0, _cpu_ns(), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            fn(data)
        calls += 50
    return (_cpu_ns() - start_cpu) / calls / 1000


def documents() -> list[tuple[str, bytes]]:
    out = [("typical Task", TYPICAL_TASK), ("Task with 4 decimals", DECIMAL_TASK)]
    for name in ("careplan-example-obesity-narrative.json", "appointment-example.json"):
        out.append((name, orjson.dumps(orjson.loads((EXAMPLES / name).read_bytes()))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    for title, data in documents():
        samples: dict[str, list[float]] = {name: [] for name in CANDIDATES}
        for _ in range(args.rounds):  # interleaved: each round times every candidate once
            for name, fn in CANDIDATES.items():
                samples[name].append(_timed(fn, data, args.seconds))
        baseline = statistics.median(samples["orjson"])
        print(f"\n{title} ({len(data)} bytes): CPU µs per decode+encode, median of {args.rounds}")
        for name, fn in CANDIDATES.items():
            median = statistics.median(samples[name])
            kept = b"12.50" in fn(data) if b"12.50" in data else None
            note = "" if kept is None else ("  12.50 kept" if kept else "  12.50 LOST")
            print(f"  {name:18} {median:8.2f} µs  {median / baseline:5.2f}x{note}")


if __name__ == "__main__":
    main()
