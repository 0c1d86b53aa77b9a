"""What the access decision costs per request and per resource, beside a same-run baseline.

The baseline is what every write already pays: the write pipeline's index extraction of the
new version (`SearchEngine.index_fields` + `compartments`). The decision's questions, in
the same process, interleaved in rounds so machine noise falls on all alike (CPU time from
`time.process_time`):
- compile: building a request's AccessDecision (once per request);
- may_write, patient/ token: judged by the new version's computed compartments;
- may_write, user/ token: unrestricted by compartment (nothing computed);
- may_release, patient/ token: per resource leaving a patient-scoped search;
- query_filter: per query (no Consent engine: SMART's part).

    .venv/bin/python bench/access.py [--rounds 20] [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fhir_server.access import AccessPolicy
from fhir_server.config import Settings
from fhir_server.context import Principal, RequestContext
from fhir_server.search import SearchEngine

TASK: dict[str, Any] = {
    "resourceType": "Task", "id": "t1", "meta": {"versionId": "1", "lastUpdated": "2026-11-01T10:00:00Z"},
    "status": "requested", "intent": "order", "priority": "routine",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "for": {"reference": "Patient/p1"}, "requester": {"reference": "Practitioner/d1"},
    "owner": {"reference": "Practitioner/d2"}, "authoredOn": "2026-11-01T10:00:00Z",
    "identifier": [{"system": "urn:x", "value": "v1"}],
}


def _context(scopes: str, patient: str | None) -> RequestContext:
    return RequestContext(base_url="http://x/fhir", interaction="create", resource_type="Task",
                          principal=Principal(client_id="c", scopes=frozenset(scopes.split()), patient=patient))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    search = SearchEngine(Settings(base_url="http://x/fhir"))
    policy = AccessPolicy(search)
    patient_ctx = _context("patient/Task.cruds", "p1")
    user_ctx = _context("user/*.cruds", None)
    reader = _context("patient/Task.rs", "p1")
    reader.interaction = "search-type"

    def baseline() -> None:
        sp = search.index_fields("Task", TASK)
        search.compartments("Task", TASK, sp)

    def compile_() -> None:
        patient_ctx.attributes.clear()
        policy.decision(patient_ctx)

    def write_patient() -> None:
        policy.decision(patient_ctx).may_write("Task", "create", TASK)

    def write_user() -> None:
        policy.decision(user_ctx).may_write("Task", "create", TASK)

    release = policy.decision(reader)

    def release_patient() -> None:
        _sync(release.may_release(TASK))

    def query_filter() -> None:
        _sync(release.query_filter("Task"))

    cases: dict[str, Callable[[], None]] = {
        "baseline: index_fields + compartments (every write)": baseline,
        "compile AccessDecision (per request)": compile_,
        "may_write, patient/ token": write_patient,
        "may_write, user/ token": write_user,
        "may_release, patient/ token (per resource)": release_patient,
        "query_filter (per query)": query_filter,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            start = time.process_time()
            for _ in range(args.n):
                fn()
            times[name].append((time.process_time() - start) / args.n * 1e6)
    base = statistics.median(times[next(iter(cases))])
    print(f"{'case':55} {'median µs':>10} {'vs baseline':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:55} {median:10.2f} {median / base:11.2f}x")


def _sync(coroutine: Any) -> Any:
    """Runs a coroutine that never awaits I/O (no Consent engine here) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine awaited I/O")


if __name__ == "__main__":
    main()
