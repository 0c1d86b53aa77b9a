"""What storing an AuditEvent costs the embedded database: a document per event (as the
lone AuditEvents are stored, with their indexes) against a document per batch of events (as
the audit writer stores them: fhir_server/storage/audit_batches.py), database CPU per event
from /proc, the ways interleaved.

    .venv/bin/python bench/audit_store.py [--events 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.storage.audit_batches import INDEXES, pack

Doc = dict[str, Any]


def event() -> Doc:
    """A document shaped as the server stores a read's event (~2 KB of JSON, 22 `sp` keys)."""
    at = datetime.now(UTC)
    rid = str(uuid.uuid4())
    return {"_id": rid, "id": rid, "v": 1, "ts": at, "del": False, "m": "POST", "res": b"x" * 1800,
            "sp": {"patient": "Patient/p1", "date": {"s": at, "e": at},
                   "entity": ["Task/t1", "Patient/p1"], **{f"k{j}": f"value-{j}" for j in range(19)}}}


def lone(col: Collection[Doc], n: int) -> None:
    for start in range(0, n, 500):  # the writer's batches, a document per event
        col.insert_many([event() for _ in range(min(500, n - start))])


def batched(size: int) -> Callable[[Collection[Doc], int], None]:
    def store(col: Collection[Doc], n: int) -> None:
        for start in range(0, n, size):
            events = [event() for _ in range(min(size, n - start))]
            col.insert_one(pack(f"{uuid.uuid4().hex}.0", events))
    return store


LONE_INDEXES = [  # AuditEvent's own (storage/database.py, interceptors/audit.py)
    IndexModel([("ts", -1), ("_id", -1)]), IndexModel([("sp.patient", 1), ("sp.date.e", -1)]),
    IndexModel([("sp.entity", 1)], partialFilterExpression={"sp.entity": {"$gte": "Consent/", "$lt": "Consent0"}}),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ways: dict[str, tuple[Callable[[Collection[Doc], int], None], list[IndexModel]]] = {
        "a document per event (before)": (lone, LONE_INDEXES),
        "a document per 50 events": (batched(50), INDEXES),
        "a document per 500 events (the writer's batch)": (batched(500), INDEXES),
    }
    results: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as database:
        process = database._process
        assert process is not None
        client: MongoClient[Doc] = MongoClient(database.uri)
        print(f"events: {args.events}  rounds: {args.rounds}  load average: {os.getloadavg()[0]:.1f}")
        for _ in range(args.rounds):
            for name, (store, indexes) in ways.items():
                col = client.bench[name.split(" (")[0].replace(" ", "_")]
                col.drop()
                col.create_indexes(indexes)
                store(col, 100)  # warm
                before = cpu_seconds(process.pid)
                store(col, args.events)
                time.sleep(0.3)
                results[name].append((cpu_seconds(process.pid) - before) / args.events * 1000)
        client.close()
    base = sorted(results["a document per event (before)"])[args.rounds // 2]
    for name, values in results.items():
        median = sorted(values)[args.rounds // 2]
        print(f"  {name:<48} {median:6.3f} ms database CPU per event  ({median / base:.2f}x)  "
              f"rounds: {' '.join(f'{v:.3f}' for v in values)}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
