"""The worklist pages of a database bench/search.py kept (`--data-dir`), with seek only.

At 300k Tasks the same-run baseline (seek off) needs longer than the server's database
time-out for `Task?status=requested` (answered 503 at 20 s), and SecantusDB goes on
working on each abandoned query, which then bills its CPU to whatever is measured next.
This measures the sought pages alone, one client, with GET by id beside them as the
same-run baseline; CPU per request is server + database, from /proc. `--off-samples N` also
measures the queries an owner narrows (whose seek-off page stays inside the time-out) on a
second server with seek off, interleaved with the first, N samples each. `--rebuild` notes
the splitter directory (storage.sort_values) from what is stored first (a database loaded
before it existed).

    .venv/bin/python bench/search_alone.py --data-dir DIR [--samples 30] [--off-samples 5]
        [--rebuild [--loaded N]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.search import PRACTITIONERS, cpu_seconds, note_values, start_server
from bench.servers import wait_ready
from fhir_server.config import Settings
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.search import SearchEngine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--port", type=int, default=18290)
    parser.add_argument("--off-samples", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--loaded", type=int, default=0,
                        help="with --rebuild: resources bench/search.py loaded (read by id)")
    args = parser.parse_args()
    rng = random.Random(7)
    queries: dict[str, Callable[[], str]] = {
        "Task?status=requested&_count=10": lambda: "/Task?status=requested&_count=10",
        "Task owner+status, -_lastUpdated": lambda: (
            f"/Task?owner=Practitioner/pr{rng.randrange(PRACTITIONERS)}"
            "&status=requested,in-progress&_sort=-_lastUpdated"),
        "Task _sort=status, _count=10": lambda: "/Task?_sort=status&_count=10",
        "Task _sort=-status, _count=10": lambda: "/Task?_sort=-status&_count=10",
        "Task owner, _sort=status, _count=10": lambda: (
            f"/Task?owner=Practitioner/pr{rng.randrange(PRACTITIONERS)}&_sort=status&_count=10"),
        "GET /Task/{id} (baseline)": lambda: "/Task/r3",
    }
    # Narrowed by an owner: the seek-off page stays inside the database time-out.
    narrowed = ("Task owner+status, -_lastUpdated", "Task owner, _sort=status, _count=10")
    with EmbeddedDatabase(Path(args.data_dir)) as db:
        if args.rebuild:
            began = time.perf_counter()
            asyncio.run(note_values(db.uri, SearchEngine(Settings()), args.loaded))
            print(f"sort-key directories noted in {time.perf_counter() - began:.0f} s")
        server = start_server(db.uri, args.port, Path(args.data_dir) / "server_alone.log")
        servers = {"seek": (server, f"http://127.0.0.1:{args.port}/fhir")}
        if args.off_samples:
            off = start_server(db.uri, args.port + 1, Path(args.data_dir) / "server_off.log",
                               FHIR_SEARCH_SEEK="0")
            servers["seek off"] = (off, f"http://127.0.0.1:{args.port + 1}/fhir")
        db_pid = db._process.pid if db._process else 0
        try:
            for _, base in servers.values():
                wait_ready(base, 600)
            clients = {label: httpx.Client(base_url=base, timeout=120)
                       for label, (_, base) in servers.items()}
            for _ in range(2):  # warm-up: the directories, the learned densities
                for name, url in queries.items():
                    for label, http in clients.items():
                        if label == "seek" or name in narrowed:
                            http.get(url())
            print("load average before: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
            for name, url in queries.items():
                labels = [x for x in clients if x == "seek" or name in narrowed]
                latencies: dict[str, list[float]] = {x: [] for x in labels}
                cpu = dict.fromkeys(labels, 0.0)
                for i in range(args.samples):
                    for label in labels:  # interleaved, one request each in turn
                        if label != "seek" and i >= args.off_samples:
                            continue
                        pids = [servers[label][0].pid, db_pid]
                        before = cpu_seconds(pids)
                        began = time.perf_counter()
                        r = clients[label].get(url())
                        latencies[label].append((time.perf_counter() - began) * 1000)
                        cpu[label] += cpu_seconds(pids) - before
                        assert r.status_code == 200, r.text
                for label in labels:
                    got = sorted(latencies[label])
                    p99 = got[min(len(got) - 1, int(0.99 * len(got)))]
                    print(f"{name + ' [' + label + ']':<48} p50 {statistics.median(got):7.1f} ms"
                          f"  p99 {p99:7.1f} ms  CPU {cpu[label] / len(got) * 1000:6.1f} "
                          f"ms/request (n={len(got)})")
            print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)

if __name__ == "__main__":
    main()
