"""The write pipeline's own CPU, two checkouts interleaved: creates, updates, a 100-entry
transaction and the loader's batches of 500 (bench/bundles.py's resource mix) through
`services.repository` (no HTTP), one client at a time, CPU of the server
code's process only (time.process_time: the embedded database is another process).

Each measurement is a fresh child process of one checkout (PYTHONPATH first), so both run the
same interpreter and venv; rounds alternate the checkouts (ABBA).

    git archive <base-commit> | tar -x -C /tmp/base
    .venv/bin/python bench/ab_writes.py --baseline /tmp/base [--rounds 6] [--writes 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import asyncio, copy, json, sys, time
from fhir_server.app import build_services
from fhir_server.batch.entries import parse_entries
from fhir_server.batch.transaction import Transaction
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from bench.rest import TASK
from bench.bundles import generate, referral
from fhir_server.storage.bulk import BulkItem, write_batch

async def main(uri, database, writes):
    settings = Settings(mongodb_uri=uri, database=database, auth_enabled=False)
    services = await build_services(settings)
    repo = services.repository
    context = RequestContext.system(settings.base_url, "bench")
    out = {}
    try:
        for _ in range(20):  # warm-up
            await repo.create(context, copy.deepcopy(TASK))
        t0 = time.process_time()
        ids = [(await repo.create(context, copy.deepcopy(TASK))).stored.id for _ in range(writes)]
        out["create"] = (time.process_time() - t0) / writes
        t0 = time.process_time()
        for n, rid in enumerate(ids):
            await repo.update(context, "Task", rid, {**copy.deepcopy(TASK), "id": rid, "priority": "urgent"})
        out["update"] = (time.process_time() - t0) / writes
        count = max(3, writes // 30)
        t0 = time.process_time()
        for _ in range(count):
            entries = parse_entries(referral(100), settings.base_url, 1000)
            await Transaction(repo, context, entries).run(None)
        out["transaction"] = (time.process_time() - t0) / count
        import pathlib, tempfile, orjson
        with tempfile.TemporaryDirectory() as tmp:
            lines = generate(pathlib.Path(tmp), 10 * writes).read_bytes().splitlines()
        items = [BulkItem(str(n), orjson.loads(line)) for n, line in enumerate(lines)]
        t0 = time.process_time()
        for start in range(0, len(items), 500):
            await write_batch(repo, context, items[start:start + 500])
        out["load"] = (time.process_time() - t0) / len(items)
    finally:
        await services.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def run(checkout: Path, uri: str, database: str, writes: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", CHILD, uri, database, str(writes)], env=env,
                          cwd=checkout, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(args.candidate))
    from fhir_server.embedded_db import EmbeddedDatabase

    sides = {"baseline": args.baseline.resolve(), "candidate": args.candidate.resolve()}
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {args.writes} writes")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp)) as db:
        for n in range(args.rounds):
            order = ["baseline", "candidate"] if n % 2 == 0 else ["candidate", "baseline"]
            for name in order:
                result = run(sides[name], db.uri, f"abw_{name}_{n}", args.writes)
                results[name].append(result)
                print(f"round {n + 1} {name:<9} " + "  ".join(
                    f"{k} {v * 1000:6.2f} ms CPU" for k, v in result.items()))
    print(f"load average {os.getloadavg()[0]:.1f}")
    for kind in results["baseline"][0]:
        base = statistics.median(r[kind] for r in results["baseline"]) * 1000
        cand = statistics.median(r[kind] for r in results["candidate"]) * 1000
        print(f"{kind:<11} baseline {base:7.2f} ms CPU | candidate {cand:7.2f} ms CPU | ratio {cand / base:.3f}")


if __name__ == "__main__":
    main()
