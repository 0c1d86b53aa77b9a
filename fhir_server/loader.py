"""`fhir-server load`: resources, Bundles and NDJSON from files or folders into the repository.

Goes through the same write pipeline as the API (validation and all interceptors), as the
server itself (no SMART principal). Transaction Bundles run as transactions (all or nothing,
references resolved); the resources of batch, collection and other Bundles, of NDJSON files
and single-resource files are written in batches of many resources per MongoDB transaction.
Resources with an id are updated-or-created, so loading the same files twice changes
nothing; resources without one are created.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server import fhirjson
from fhir_server.batch.entries import parse_entries
from fhir_server.batch.transaction import Transaction
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.resource_types import STORED
from fhir_server.storage.bulk import BulkItem, write_batch

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Batches written at once: one is prepared (validated, indexed) while the database writes
# the other. A resource in two batches in flight is still safe: the later batch finds its
# version moved and falls back to one-by-one writes.
IN_FLIGHT = 2


@dataclass
class LoadSummary:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def report(self) -> str:
        total = sum(self.counts.values()) - self.counts["skipped"] + self.failed
        rate = total / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"loaded {total} resources in {self.seconds:.1f}s ({rate:.0f}/s): "
            f"{self.counts['created']} created, {self.counts['updated']} updated, "
            f"{self.counts['unchanged']} unchanged, {self.counts['skipped']} skipped, "
            f"{self.failed} failed"
        ]
        for where, reason in self.failures[:50]:
            lines.append(f"  failed {where}: {reason}")
        if self.failed > 50:
            lines.append(f"  ... and {self.failed - 50} more")
        return "\n".join(lines)


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")))
        else:
            found.append(path)
    return found


def _items(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, value) pairs: NDJSON lines, or the file's one JSON value."""
    data = path.read_bytes()
    if path.suffix == ".ndjson":
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield f"{path}:{n}", fhirjson.loads(line)
        return
    yield str(path), fhirjson.loads(data)


def _progress(done: int, total: int, loaded: int) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files, {loaded} resources")
    sys.stderr.flush()


class Loader:
    def __init__(self, services: Any, summary: LoadSummary) -> None:
        self.services = services
        self.summary = summary
        self.context = RequestContext.system(services.settings.base_url, "load")
        self.pending: list[BulkItem] = []
        self.in_flight: list[asyncio.Task[None]] = []

    async def add(self, where: str, value: Any) -> None:
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            if value.get("type") == "transaction":
                await self.finish()
                await self._transaction(where, value)
                return
            for n, entry in enumerate(value.get("entry", [])):
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    await self.add(f"{where}#entry[{n}]", entry["resource"])
            return
        if not isinstance(value, dict) or value.get("resourceType") not in STORED:
            kind = value.get("resourceType") if isinstance(value, dict) else type(value).__name__
            self.summary.counts["skipped"] += 1
            log.info("skipped %s: type %s is not stored by this server", where, kind)
            return
        self.pending.append(BulkItem(where, value))
        if len(self.pending) >= BATCH_SIZE:
            await self.flush()

    async def flush(self) -> None:
        items, self.pending = self.pending, []
        if items:
            while len(self.in_flight) >= IN_FLIGHT:
                await self.in_flight.pop(0)
            self.in_flight.append(asyncio.create_task(self._write(items)))

    async def finish(self) -> None:
        await self.flush()
        while self.in_flight:
            await self.in_flight.pop(0)

    async def _write(self, items: list[BulkItem]) -> None:
        for result in await write_batch(self.services.repository, self.context, items):
            if result.outcome == "failed":
                self.summary.failures.append((result.item.where, result.reason))
            else:
                self.summary.counts[result.outcome] += 1

    async def _transaction(self, where: str, bundle: dict[str, Any]) -> None:
        settings = self.services.settings
        try:
            entries = parse_entries(bundle, settings.base_url, settings.max_bundle_entries)
            writes = [e for e in entries if e.method in ("POST", "PUT", "PATCH", "DELETE")]
            skipped = len(entries) - len(writes)
            if skipped:
                log.info("%s: %d read entries of the transaction are not run by load", where, skipped)
            written = await Transaction(self.services.repository, self.context, writes).run(None)
        except FhirError as error:
            reason = "; ".join(i.diagnostics for i in error.all_issues())[:300]
            self.summary.failures.append((where, f"transaction failed, nothing written: {error.status}: {reason}"))
            return
        for response in written:
            status = response["response"]["status"][:3]
            self.summary.counts["created" if status == "201" else "updated" if status == "200" else "deleted"] += 1


async def load_paths(settings: Settings, paths: list[Path]) -> LoadSummary:
    from fhir_server.services import build_services

    services = await build_services(settings)
    summary = LoadSummary()
    loader = Loader(services, summary)
    files = _files(paths)
    started = time.perf_counter()
    try:
        for done, path in enumerate(files, 1):
            try:
                for where, value in _items(path):
                    await loader.add(where, value)
            except (OSError, fhirjson.DecodeError) as exc:
                summary.failures.append((str(path), f"unreadable: {exc}"))
            _progress(done, len(files), sum(summary.counts.values()))
        await loader.finish()
    finally:
        await services.close()
    if files and sys.stderr.isatty():
        sys.stderr.write("\n")
    summary.seconds = time.perf_counter() - started
    return summary
