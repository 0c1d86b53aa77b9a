"""The worklist pages of a database bench/search.py kept (`--data-dir`), with seek only.

At 300k Tasks the same-run baseline (seek off) needs longer than the server's database
time-out for `Task?status=requested` (answered 503 at 20 s), and SecantusDB goes on
working on each abandoned query, which then bills its CPU to whatever is measured next.
This measures the sought pages alone, one client, with GET by id beside them as the
same-run baseline; CPU per request is server + database, from /proc.

    .venv/bin/python bench/search_alone.py --data-dir DIR [--samples 30]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.search import PRACTITIONERS, cpu_seconds, start_server, wait_long
from fhir_server.embedded_db import EmbeddedDatabase


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--port", type=int, default=18290)
    args = parser.parse_args()
    rng = random.Random(7)
    queries: dict[str, Callable[[], str]] = {
        "Task?status=requested&_count=10": lambda: "/Task?status=requested&_count=10",
        "Task owner+status, -_lastUpdated": lambda: (
            f"/Task?owner=Practitioner/pr{rng.randrange(PRACTITIONERS)}"
            "&status=requested,in-progress&_sort=-_lastUpdated"),
        "GET /Task/{id} (baseline)": lambda: "/Task/r3",
    }
    with EmbeddedDatabase(Path(args.data_dir)) as db:
        server = start_server(db.uri, args.port, Path(args.data_dir) / "server_alone.log")
        base = f"http://127.0.0.1:{args.port}/fhir"
        try:
            wait_long(base)
            pids = [server.pid, db._process.pid if db._process else 0]
            with httpx.Client(base_url=base, timeout=120) as http:
                for _ in range(2):  # warm-up: the bucket directory, the learned densities
                    for url in queries.values():
                        http.get(url())
                print("load average before: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
                for name, url in queries.items():
                    latencies = []
                    before = cpu_seconds(pids)
                    for _ in range(args.samples):
                        began = time.perf_counter()
                        r = http.get(url())
                        latencies.append((time.perf_counter() - began) * 1000)
                        assert r.status_code == 200, r.text
                    cpu = (cpu_seconds(pids) - before) / args.samples * 1000
                    latencies.sort()
                    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                    print(f"{name:<36} p50 {statistics.median(latencies):7.1f} ms  p99 "
                          f"{p99:7.1f} ms  CPU {cpu:6.1f} ms/request (n={args.samples})")
                print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
