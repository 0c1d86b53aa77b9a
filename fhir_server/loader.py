"""`fhir-server load`: resources and Bundles from files or folders into the repository.

Goes through the same write pipeline as the API (validation and all interceptors), as the
server itself (no SMART principal). Resources with an id are updated-or-created, so loading
the same files twice changes nothing; resources without one are created.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.resource_types import STORED

log = logging.getLogger(__name__)


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


def _resources(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, resource) pairs: a file's resource, a Bundle's entries, an NDJSON's lines."""
    data = path.read_bytes()
    if path.suffix == ".ndjson":
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield f"{path}:{n}", orjson.loads(line)
        return
    value = orjson.loads(data)
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        for n, entry in enumerate(value.get("entry", [])):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield f"{path}#entry[{n}]", entry["resource"]
        return
    yield str(path), value


def _progress(done: int, total: int) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files")
    sys.stderr.flush()


async def load_paths(settings: Settings, paths: list[Path]) -> LoadSummary:
    from fhir_server.app import build_services

    services = await build_services(settings)
    context = RequestContext.system(settings.base_url, "load")
    summary = LoadSummary()
    files = _files(paths)
    started = time.perf_counter()
    try:
        for done, path in enumerate(files, 1):
            try:
                items = list(_resources(path))
            except (OSError, orjson.JSONDecodeError) as exc:
                summary.failures.append((str(path), f"unreadable: {exc}"))
                continue
            for where, resource in items:
                await _load_one(services.repository, context, where, resource, summary)
            _progress(done, len(files))
    finally:
        await services.close()
    if files and sys.stderr.isatty():
        sys.stderr.write("\n")
    summary.seconds = time.perf_counter() - started
    return summary


async def _load_one(repository: Any, context: RequestContext, where: str, resource: Any,
                    summary: LoadSummary) -> None:
    if not isinstance(resource, dict) or resource.get("resourceType") not in STORED:
        kind = resource.get("resourceType") if isinstance(resource, dict) else type(resource).__name__
        summary.counts["skipped"] += 1
        log.info("skipped %s: type %s is not stored by this server", where, kind)
        return
    try:
        rid = resource.get("id")
        if isinstance(rid, str):
            outcome = await repository.update(context, resource["resourceType"], rid, resource)
        else:
            outcome = await repository.create(context, resource)
    except FhirError as exc:
        reason = "; ".join(i.diagnostics for i in exc.all_issues())[:300]
        summary.failures.append((where, f"{exc.status}: {reason}"))
        return
    summary.counts["created" if outcome.created else "updated" if outcome.changed else "unchanged"] += 1
