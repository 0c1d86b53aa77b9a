"""How late SecantusDB streams the driver's heartbeat while its threads are busy (why the
server lets a heartbeat be 20 s late before it takes the database for gone: services.py
HEARTBEAT_LATE_MS). Starts an embedded database, watches the streamed heartbeats (due every
10 s) while `--workers` threads keep it busy with collection scans, and prints how long
each awaited heartbeat took: anything over 10 s is lateness. Run it beside other load
(`--seconds` bounds it).

    .venv/bin/python bench/heartbeat_lateness.py --seconds 45 --workers 16
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from pymongo import MongoClient, monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fhir_server.embedded_db import EmbeddedDatabase


class Heartbeats(monitoring.ServerHeartbeatListener):
    def __init__(self) -> None:
        self.awaited: list[float] = []
        self.failures: list[str] = []

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        if event.awaited:
            self.awaited.append(event.duration)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        self.failures.append(repr(event.reply))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    with EmbeddedDatabase(None) as db:
        beats = Heartbeats()
        watch: MongoClient[dict[str, object]] = MongoClient(db.uri, event_listeners=[beats], connectTimeoutMS=30_000)
        watch.admin.command("ping")
        work: MongoClient[dict[str, object]] = MongoClient(db.uri, maxPoolSize=max(8, args.workers * 2))
        docs = work.bench.docs
        docs.insert_many([{"i": i, "s": "x" * 200} for i in range(3000)])
        stop = time.monotonic() + args.seconds

        def busy() -> None:
            while time.monotonic() < stop:
                list(docs.find({"s": {"$regex": "y"}}).limit(10))  # a scan: CPU in the database

        threads = [threading.Thread(target=busy) for _ in range(args.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load = os.getloadavg()
        late = [round(d - 10, 2) for d in beats.awaited]
        print(f"{args.workers} busy threads for {args.seconds:.0f} s, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}: "
              f"awaited heartbeats late by {late} s (max {max(late, default=0):.2f}); failures {beats.failures}")
        watch.close()
        work.close()


if __name__ == "__main__":
    main()
