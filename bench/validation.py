"""Validation cost per resource: our Validator vs raw jsonschema vs fhir.resources.

    .venv/bin/python bench/validation.py [--runs 2000]

For each resource it prints median and p99 (microseconds, one thread) of
  ours        Validator.validate: the walker (structure, cardinality, bindings, FHIR JSON
              rules) plus profile checks
  jsonschema  Draft6Validator on #/definitions/<Type> of the official R4 schema, compiled
              once (structure only: no cardinality, no null/empty/control-character rules)
  resourceList the same through #/definitions/ResourceList (the schema's own entry point,
              a oneOf over 146 resource types), a few runs only
  fhir.res    fhir.resources (R4B models, pydantic 2) `model_validate`
and whether each found the resource valid.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jsonschema import Draft6Validator  # noqa: E402

from fhir_server.config import DEFAULT_PROFILES_DIR  # noqa: E402
from fhir_server.validation import Validator, structure  # noqa: E402
from fhir_server.validation.schema import schema_validator  # noqa: E402

EXAMPLES = ROOT / "tests" / "fixtures" / "examples"

# What a coordination client typically creates (same shape as bench/rest.py's Task).
TYPICAL_TASK: dict[str, Any] = {
    "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
    "description": "Call the patient about the cardiology referral",
    "for": {"reference": "Patient/p1"}, "owner": {"reference": "Practitioner/dr1"},
    "requester": {"reference": "PractitionerRole/pr1"},
    "authoredOn": "2026-11-01T10:00:00Z",
    "identifier": [{"system": "urn:bench", "value": "t"}],
    "meta": {"profile": ["http://fhir.care-coord.example/StructureDefinition/coordination-task"]},
    "code": {"coding": [{"system": "http://fhir.care-coord.example/CodeSystem/"
                         "coordination-task-code", "code": "referral"}]},
}


def resources() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [("typical Task (profiled)", TYPICAL_TASK)]
    for name in ("task-example1.json", "task-example6.json", "patient-example.json",
                 "careplan-example-obesity-narrative.json", "consent-example-Emergency.json",
                 "bundle-transaction.json"):
        out.append((name, json.loads((EXAMPLES / name).read_text(encoding="utf-8"))))
    return out


def timed(fn: Callable[[], bool], runs: int) -> tuple[float, float, bool]:
    ok = fn()  # warm-up (first call compiles lazily)
    gc.collect()  # so that one series does not pay for the garbage of the one before
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples) * 1e6, p99 * 1e6, ok


def fhir_resources_model(rtype: str) -> Any:
    module = __import__(f"fhir.resources.R4B.{rtype.lower()}", fromlist=[rtype])
    return getattr(module, rtype)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    runs: int = args.runs
    start = time.perf_counter()
    validator = Validator(DEFAULT_PROFILES_DIR)
    print(f"Validator start-up (tables + profiles): {(time.perf_counter() - start) * 1e3:.0f} ms")
    whole = Draft6Validator(structure.schema())

    def fmt(m: tuple[float, float, bool]) -> str:
        return f"{m[0]:>9.0f} {m[1]:>8.0f} {'ok' if m[2] else 'NO':>3}"

    print(f"{'resource (µs: median p99 valid)':<40}{'ours':>22}{'jsonschema':>22}"
          f"{'resourceList':>22}{'fhir.res':>22}")
    for label, resource in resources():
        rtype = resource["resourceType"]
        per_type = schema_validator(rtype)
        model = fhir_resources_model(rtype)

        def model_ok(model: Any = model, resource: dict[str, Any] = resource) -> bool:
            try:
                model.model_validate(resource)
            except ValueError:
                return False
            return True

        ours = timed(partial(lambda r: validator.validate(r).valid, resource), runs)
        schema = timed(partial(per_type.is_valid, resource), max(runs // 10, 20))
        listed = timed(partial(whole.is_valid, resource), 3)
        pydantic = timed(model_ok, max(runs // 4, 20))
        size = len(json.dumps(resource))
        print(f"{label[:32] + f' {size}B':<40}{fmt(ours):>22}{fmt(schema):>22}{fmt(listed):>22}"
              f"{fmt(pydantic):>22}")


if __name__ == "__main__":
    main()
