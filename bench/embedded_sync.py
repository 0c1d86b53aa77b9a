"""What `--sync-on-commit` (the embedded database's default since it was seen losing
acknowledged writes when killed) costs: one current+history transaction at a time and with
8 concurrent clients, sync on vs off, rounds interleaved.

    .venv/bin/python bench/embedded_sync.py [--rounds 3] [--writes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fhir_server.embedded_db import EmbeddedDatabase


async def writes_per_second(uri: str, writes: int, clients: int) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client["bench_sync"]

    async def one() -> None:
        doc = {"_id": uuid.uuid4().hex, "v": 1, "res": b"x" * 400}
        async with client.start_session() as s, await s.start_transaction():
            await db.cur.insert_one(doc, session=s)
            await db.hist.insert_one({**doc, "_id": doc["_id"] + "/1"}, session=s)

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(writes // clients) for _ in range(clients)))
    rate = (writes // clients * clients) / (time.perf_counter() - t0)
    await client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {mode: EmbeddedDatabase(Path(tmp) / mode, sync_on_commit=mode == "sync") for mode in ("sync", "nosync")}
        for db in dbs.values():
            db.start()
        try:
            rates: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):
                for clients in (1, 8):
                    for mode, db in dbs.items():
                        rate = asyncio.run(writes_per_second(db.uri, args.writes, clients))
                        rates.setdefault((mode, clients), []).append(rate)
            for clients in (1, 8):
                sync = statistics.median(rates[("sync", clients)])
                nosync = statistics.median(rates[("nosync", clients)])
                print(f"{clients} client(s): sync-on-commit {sync:7.0f} tx/s   without {nosync:7.0f} tx/s   "
                      f"ratio {sync / nosync:.2f}")
        finally:
            for db in dbs.values():
                db.stop()


if __name__ == "__main__":
    main()
