"""Audit and provenance settings, from `Settings.extra` (tests, embedding) or the environment.

| extra key / variable | default | meaning |
| --- | --- | --- |
| `audit` / `FHIR_AUDIT` | on when auth is on | `off`: no AuditEvents |
| `provenance` / `FHIR_PROVENANCE` | on when auth is on | `off`: no Provenance per write |
| `audit_dir` / `FHIR_AUDIT_DIR` | `<data dir>/audit` | the write-ahead log of AuditEvents not yet stored |
| `audit_flush_ms` / `FHIR_AUDIT_FLUSH_MS` | 500 | the longest an AuditEvent waits before its batch is stored |
| `audit_sync_ms` / `FHIR_AUDIT_SYNC_MS` | 50 | the longest an AuditEvent waits before the log is fsynced |
| `audit_batch` / `FHIR_AUDIT_BATCH` | 500 | a batch is stored as soon as it has this many |
| `audit_max_pending` / `FHIR_AUDIT_MAX_PENDING` | 20000 | requests wait when this many are not stored yet |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fhir_server.config import Settings

_OFF = ("off", "0", "false", "no")


def _option(settings: Settings, key: str, variable: str, default: str) -> str:
    return settings.extra.get(key) or os.environ.get(variable) or default


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = True
    provenance: bool = True
    directory: Path = Path("data/audit")
    flush_interval: float = 0.5
    sync_interval: float = 0.05
    batch_size: int = 500
    max_pending: int = 20_000

    @classmethod
    def from_settings(cls, settings: Settings, auth_enabled: bool) -> AuditSettings:
        default = "on" if auth_enabled else "off"
        return cls(
            enabled=_option(settings, "audit", "FHIR_AUDIT", default).lower() not in _OFF,
            provenance=_option(settings, "provenance", "FHIR_PROVENANCE", default).lower() not in _OFF,
            directory=Path(_option(settings, "audit_dir", "FHIR_AUDIT_DIR", str(settings.data_dir / "audit"))),
            flush_interval=int(_option(settings, "audit_flush_ms", "FHIR_AUDIT_FLUSH_MS", "500")) / 1000,
            sync_interval=int(_option(settings, "audit_sync_ms", "FHIR_AUDIT_SYNC_MS", "50")) / 1000,
            batch_size=int(_option(settings, "audit_batch", "FHIR_AUDIT_BATCH", "500")),
            max_pending=int(_option(settings, "audit_max_pending", "FHIR_AUDIT_MAX_PENDING", "20000")),
        )
