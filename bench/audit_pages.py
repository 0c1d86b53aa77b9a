"""What a page of the audit log costs as the log grows: `GET AuditEvent?_count=10` (newest
first, the default) and `_sort=-_lastUpdated`, its second page, and a patient's page, over an
audit log of N events in batch documents spread over 30 days (as the audit writer stores
them: fhir_server/storage/audit_batches.py).

Baseline, same run, interleaved: the same requests with the newest-first walk turned off
(every batch's events unwound, then sorted: what a page cost before). Latency p50 and the
database's CPU per request from /proc. Auth off (one token check less; the page's own cost is
the subject), audit on.

    .venv/bin/python bench/audit_pages.py [--events 20000,100000] [--samples 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.measures import cpu_seconds, percentile
from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.search import SearchEngine
from fhir_server.serving import Server
from fhir_server.storage import audit_batches
from fhir_server.storage.pipeline import Versions

DATABASE = "bench_audit_pages"
SPREAD = timedelta(days=30)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(n: int) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "action": "R", "recorded": "2026-11-01T00:00:00Z",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "agent": [{"requestor": True, "who": {"reference": "Practitioner/gray"}}],
            "source": {"observer": {"display": "bench"}},
            "entity": [{"what": {"reference": f"Patient/p{n % 50}"}}]}


def store(uri: str, base_url: str, start: int, count: int, now: datetime, total: int) -> None:
    """Events start..start+count of `total` spread evenly over SPREAD back from `now`, stored
    a batch of 500 to a document as the audit writer does."""
    versions = Versions(SearchEngine(Settings(base_url=base_url)))
    step = SPREAD / total
    with MongoClient(uri, tz_aware=True) as client:
        batches = client[DATABASE][audit_batches.BATCHES]
        docs = []
        for first in range(start, start + count, audit_batches.CHUNK_EVENTS):
            events = []
            for n in range(first, min(first + audit_batches.CHUNK_EVENTS, start + count)):
                doc = versions.build("AuditEvent", f"bench{first}.0.{n - first}", event(n), None, "create").current
                doc["ts"] = now - SPREAD + step * n
                events.append(doc)
            docs.append(audit_batches.pack(f"bench{first}.0", events))
        batches.insert_many(docs, ordered=False)


def measure(client: httpx.Client, db_pid: int, samples: int, walk: bool, kinds: dict[str, Any]) -> dict[str, tuple[list[float], float]]:
    original = audit_batches._Cursor._walks
    if not walk:
        audit_batches._Cursor._walks = lambda self: False  # type: ignore[method-assign]
    try:
        out: dict[str, tuple[list[float], float]] = {}
        for kind, (path, params) in kinds.items():
            lat: list[float] = []
            d0 = cpu_seconds(db_pid)
            for _ in range(samples):
                t = time.perf_counter()
                answer = client.get(path, params=params)
                lat.append(time.perf_counter() - t)
                assert answer.status_code == 200, answer.text
                assert len(answer.json().get("entry", [])) == 10, answer.text[:300]
            out[kind] = (lat, (cpu_seconds(db_pid) - d0) / samples)
        return out
    finally:
        audit_batches._Cursor._walks = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="20000,100000")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="5,000 events, 5 samples")
    args = parser.parse_args()
    sizes = [5000] if args.quick else [int(x) for x in args.events.split(",")]
    samples = 5 if args.quick else args.samples
    os.environ["FHIR_AUDIT"] = "on"
    os.environ.setdefault("FHIR_AUDIT_DIR", tempfile.mkdtemp())
    with EmbeddedDatabase(None) as db:
        port = free_port()
        settings = Settings(host="127.0.0.1", port=port, base_url=f"http://127.0.0.1:{port}/fhir",
                            mongodb_uri=db.uri, database=DATABASE, auth_enabled=False)
        # The server class `fhir-server serve` runs (its start-up settles the collector).
        server = Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                       log_level="warning", lifespan="on"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        db_pid = db._process.pid if db._process else 0
        now = datetime.now(UTC)
        stored = 0
        with httpx.Client(base_url=settings.base_url, timeout=600) as client:
            for size in sizes:
                print(f"storing {size - stored:,} events ...", file=sys.stderr)
                store(db.uri, settings.base_url, stored, size - stored, now, max(sizes))
                stored = size
                first = client.get("/AuditEvent", params={"_count": "10"}).json()
                second = next(link["url"] for link in first["link"] if link["relation"] == "next")
                kinds = {
                    "GET AuditEvent?_count=10 (newest first)": ("/AuditEvent", {"_count": "10"}),
                    "GET AuditEvent?_sort=-_lastUpdated&_count=10": ("/AuditEvent", {"_sort": "-_lastUpdated", "_count": "10"}),
                    "its second page (the next link)": (second, None),
                    "GET AuditEvent?patient=Patient/p7&_count=10": ("/AuditEvent", {"patient": "Patient/p7", "_count": "10"}),
                }
                results: dict[bool, dict[str, tuple[list[float], float]]] = {True: {}, False: {}}
                for _ in range(args.rounds):
                    for walk in (True, False):  # interleaved
                        for kind, (lat, cpu) in measure(client, db_pid, samples, walk, kinds).items():
                            old = results[walk].get(kind, ([], 0.0))
                            results[walk][kind] = (old[0] + lat, old[1] + cpu / args.rounds)
                print(f"\n| {size:,} batched events over 30 days (auth off, audit on; load {os.getloadavg()[0]:.1f}) "
                      "| p50 | p99 | DB CPU | before (every batch read): p50 | DB CPU | ratio p50 |")
                print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
                for kind in kinds:
                    (lat, cpu), (blat, bcpu) = results[True][kind], results[False][kind]
                    print(f"| {kind} | {statistics.median(lat) * 1000:.0f} ms | {percentile(lat, 0.99) * 1000:.0f} ms | "
                          f"{cpu * 1000:.1f} ms | {statistics.median(blat) * 1000:.0f} ms | {bcpu * 1000:.1f} ms | "
                          f"{statistics.median(lat) / statistics.median(blat):.2f}× |")
        server.should_exit = True


if __name__ == "__main__":
    main()
