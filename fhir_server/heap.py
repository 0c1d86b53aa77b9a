"""The garbage collector, set for a long-running server (`fhir-server serve`).

Measured on a default-configuration read (docs/performance.md, issue 16 third session):
CPython's collector took 0.26-0.31 ms of CPU per request, most of it full (generation 2)
collections. Every request leaves objects that live a little (its AuditEvent waits up to
half a second in the writer's batch; cache entries), so they reach the old generation and
trigger full collections over the whole heap, start-up objects included (the search
registry, the profiles, the modules: ~77,000 objects that never become garbage).

After start-up, then: what exists is collected once and frozen (`gc.freeze`: never scanned
again), and collections are rarer (generation 0 at 7,000 allocations, generations 1 and 2
each after 20 of the one below). Most objects are freed by reference counting anyway; the
collector is only for cycles. Measured: 0.04-0.08 ms per request. `FHIR_GC=default` keeps
CPython's defaults.
"""

from __future__ import annotations

import gc
import os

THRESHOLDS = (7000, 20, 20)


def settle() -> None:
    """Called once the server has started (all its start-up objects exist)."""
    if os.environ.get("FHIR_GC", "tuned").strip().lower() == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
