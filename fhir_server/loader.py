"""`fhir-server load`: resources, Bundles and NDJSON from files or folders into the repository.

Goes through the same write pipeline as the API (validation and all interceptors), as the
server itself (no SMART principal). Transaction Bundles run as transactions (all or nothing,
references resolved); the resources of batch, collection and other Bundles, of NDJSON files
and single-resource files are written in batches of many resources per MongoDB transaction.

Loading the same files twice changes nothing:
- a resource with an id is created, updated or left unchanged;
- a resource without one gets an id derived from its content (a UUID v5), so it is created
  once, not once per load;
- an id met again in the same load is skipped (the first occurrence is loaded), so files that
  disagree about a resource do not rewrite it twice on every load;
- AuditEvents are append-only, also for load: a new one is created, one with the same content
  already stored is unchanged, a different one under a stored id fails (405), never rewritten.
Skipped, not failed: what is about types this server does not store (such resources, a
transaction Bundle holding them, a Subscription whose criteria search one).
A transaction Bundle runs as written: its POSTs without `ifNoneExist` create on every load.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fhir_server import fhirjson
from fhir_server.batch.entries import parse_entries
from fhir_server.batch.transaction import Transaction
from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError, NotSupported
from fhir_server.resource_types import STORED
from fhir_server.storage.bulk import BulkItem, write_batch

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Batches written at once: one is prepared (validated, indexed) while the database writes
# the other. A resource is never in two batches: an id is loaded once per run.
IN_FLIGHT = 2
# The namespace of the ids given to resources loaded without one.
CONTENT_IDS = uuid.UUID("6f1d7c3e-5b0a-4d5e-9a41-0c8e2f7b9d10")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]+")
OUTCOMES = ("created", "updated", "unchanged", "deleted", "failed")
SHOWN_FAILURES = 50
UNSTORED = "types not stored by this server"


@dataclass
class LoadSummary:
    """What one load did. Every resource read is counted once: in an outcome or as skipped."""

    counts: Counter[str] = field(default_factory=Counter)  # OUTCOMES
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> resources
    unstored: Counter[str] = field(default_factory=Counter)  # type not stored -> resources skipped
    failures: list[tuple[str, str]] = field(default_factory=list)  # (where, reason), one per failed item
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def to_load(self) -> int:
        """Resources of stored types read: created + updated + unchanged + deleted + failed."""
        return sum(self.counts[o] for o in OUTCOMES)

    @property
    def read(self) -> int:
        return self.to_load + sum(self.skipped.values())

    def fail(self, where: str, reason: str, resources: int = 1) -> None:
        self.counts["failed"] += resources
        self.failures.append((where, reason))

    def skip(self, reason: str, resources: int = 1) -> None:
        self.skipped[reason] += resources

    def report(self) -> str:
        rate = self.to_load / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.counts[o]} {o}" for o in OUTCOMES if o != "deleted" or self.counts[o]]
        lines = [
            f"read {self.read} resources in {self.seconds:.1f}s: {self.to_load} to load ({rate:.0f}/s) = "
            + " + ".join(parts) + f"; {sum(self.skipped.values())} skipped"
        ]
        for reason, n in self.skipped.most_common():
            lines.append(f"  skipped {n}: {reason}")
            if reason == UNSTORED and self.unstored:
                lines[-1] += " (" + ", ".join(f"{t} {k}" for t, k in self.unstored.most_common()) + ")"
        for where, reason in self.failures[:SHOWN_FAILURES]:
            lines.append(f"  failed {where}: {reason}")
        if len(self.failures) > SHOWN_FAILURES:
            lines.append(f"  ... and {len(self.failures) - SHOWN_FAILURES} more failures")
        return "\n".join(lines)


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")))
        else:
            found.append(path)
    return found


@dataclass(frozen=True)
class Unreadable:
    reason: str


def _parse(data: bytes) -> Any:
    try:
        return fhirjson.loads(data)
    except fhirjson.DecodeError as exc:
        return Unreadable(f"unreadable, not JSON: {exc}")


def _items(path: Path, bar: tqdm[Any]) -> Iterator[tuple[str, Any]]:
    """(where, value) pairs: NDJSON lines, or the file's one JSON value (Unreadable when it is
    not JSON); advances the bar by bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield str(path), Unreadable(f"unreadable: {exc}")
        return
    if path.suffix == ".ndjson":
        for n, line in enumerate(data.splitlines(keepends=True), 1):
            bar.update(len(line))
            if line.strip():
                yield f"{path}:{n}", _parse(line)
        return
    bar.update(len(data))
    yield str(path), _parse(data)


def _content_id(resource: dict[str, Any]) -> str:
    return str(uuid.uuid5(CONTENT_IDS, fhirjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode()))


def _subscription_on_unstored_type(resource: dict[str, Any]) -> str | None:
    criteria = resource.get("criteria") if resource.get("resourceType") == "Subscription" else None
    if not isinstance(criteria, str):
        return None
    searched = criteria.split("?", 1)[0]
    return searched if _TYPE_NAME.fullmatch(searched) and searched not in STORED else None


class Loader:
    def __init__(self, services: Any, summary: LoadSummary) -> None:
        self.services = services
        self.summary = summary
        self.context = RequestContext.system(services.settings.base_url, "load")
        self.pending: list[BulkItem] = []
        self.in_flight: list[asyncio.Task[None]] = []
        self.seen: set[str] = set()  # "Type/id" read so far (about 100 bytes each)

    async def add(self, where: str, value: Any) -> None:
        if isinstance(value, Unreadable):
            self.summary.fail(where, value.reason)
            return
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
            self.summary.skip(UNSTORED)
            self.summary.unstored[str(kind)] += 1
            log.debug("skipped %s: type %s is not stored by this server", where, kind)
            return
        searched = _subscription_on_unstored_type(value)
        if searched:
            self.summary.skip(f"Subscription on {searched}, a type not stored by this server")
            log.debug("skipped %s: its criteria search %s, which is not stored", where, searched)
            return
        if not isinstance(value.get("id"), str):
            value = {**value, "id": _content_id(value)}
        key = f"{value['resourceType']}/{value['id']}"
        if key in self.seen:
            self.summary.skip("an id met earlier in this load (the first one is loaded)")
            log.debug("skipped %s: %s was read earlier in this load", where, key)
            return
        self.seen.add(key)
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
                self.summary.fail(result.item.where, result.reason)
            else:
                self.summary.counts[result.outcome] += 1

    async def _transaction(self, where: str, bundle: dict[str, Any]) -> None:
        settings = self.services.settings
        size = len(bundle.get("entry") or [])
        try:
            entries = parse_entries(bundle, settings.base_url, settings.max_bundle_entries)
        except NotSupported as error:
            # All or nothing, and this server cannot take all: like a resource of such a type.
            self.summary.skip("in a transaction holding types not stored by this server", size)
            log.debug("skipped %s: %s", where, "; ".join(i.diagnostics for i in error.all_issues()))
            return
        except FhirError as error:
            self.summary.fail(where, f"transaction refused, nothing written: {_reason(error)}", size)
            return
        writes = [e for e in entries if e.method in ("POST", "PUT", "PATCH", "DELETE")]
        if len(entries) > len(writes):
            self.summary.skip("read entries of a transaction (load runs only its writes)",
                              len(entries) - len(writes))
        now = datetime.now(UTC)
        started = now.replace(microsecond=now.microsecond // 1000 * 1000)  # lastModified has ms
        try:
            written = await Transaction(self.services.repository, self.context, writes).run(None)
        except FhirError as error:
            self.summary.fail(where, f"transaction failed, nothing written: {_reason(error)}", len(writes))
            return
        for response in written:
            self.summary.counts[_outcome(response["response"], started)] += 1


def _outcome(response: dict[str, Any], started: datetime) -> str:
    """created | updated | unchanged | deleted, from a transaction's entry response: an update
    that changed nothing answers 200 with its old version, last modified before we started."""
    status = str(response.get("status", ""))[:3]
    if status == "201":
        return "created"
    if status != "200":
        return "deleted"
    try:
        modified = datetime.fromisoformat(str(response.get("lastModified")))
    except ValueError:
        return "updated"
    return "unchanged" if modified < started else "updated"


def _reason(error: FhirError) -> str:
    return f"{error.status}: " + "; ".join(i.diagnostics for i in error.all_issues())[:300]


def _progress(summary: LoadSummary) -> str:
    done = summary.to_load - summary.failed
    return f"{done} loaded, {summary.failed} failed, {sum(summary.skipped.values())} skipped"


async def load_paths(settings: Settings, paths: list[Path]) -> LoadSummary:
    from fhir_server.services import build_services

    services = await build_services(settings)
    summary = LoadSummary()
    loader = Loader(services, summary)
    files = _files(paths)
    total = sum(p.stat().st_size for p in files if p.is_file())
    started = time.perf_counter()
    with ExitStack() as stack:
        # One bar (on a terminal only), per-item log lines (-v) printed above it.
        bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, desc="load", disable=None,
                                       leave=True, dynamic_ncols=True))
        stack.enter_context(logging_redirect_tqdm())
        try:
            for path in files:
                for where, value in _items(path, bar):
                    await loader.add(where, value)
                bar.set_postfix_str(_progress(summary), refresh=False)
            await loader.finish()
            bar.set_postfix_str(_progress(summary))
        finally:
            await services.close()
    summary.seconds = time.perf_counter() - started
    return summary
