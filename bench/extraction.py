"""Write-time search extraction (`SearchEngine.index_fields`) per resource type, in CPU time.

    .venv/bin/python -m bench.extraction

Interleaved rounds over one specification example of each type; the median per resource is
printed beside Task's from the same run (the baseline), so a noisy machine shows as ratios.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from fhir_server.config import Settings
from fhir_server.search import SearchEngine

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "examples"
ROUNDS = 5
PER_ROUND = 2000


def _example(name: str, rtype: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    if rtype is None:
        return data
    return next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == rtype)


def main() -> None:
    engine = SearchEngine(Settings(base_url="http://localhost/fhir"))
    samples = {
        "Task": _example("task-example1.json"),
        "Appointment": _example("appointment-example.json"),
        "Observation": _example("bundle-references.json", "Observation"),
        "ServiceRequest": _example("servicerequest-example.json"),
        "Encounter": _example("encounter-example.json"),
        "Slot": _example("slot-example.json"),
    }
    timings: dict[str, list[float]] = {k: [] for k in samples}
    for _ in range(ROUNDS):
        for rtype, resource in samples.items():
            start = time.process_time()
            for _ in range(PER_ROUND):
                engine.index_fields(rtype, resource)
            timings[rtype].append((time.process_time() - start) / PER_ROUND * 1e6)
    base = statistics.median(timings["Task"])
    for rtype, values in timings.items():
        median = statistics.median(values)
        print(f"{rtype:15} {median:7.1f} µs CPU per resource  ({median / base:.2f}× Task)")


if __name__ == "__main__":
    main()
