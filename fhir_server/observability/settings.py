"""Observability settings, from `Settings.extra` (tests, embedding) or the environment.

| extra key / variable | default | meaning |
| --- | --- | --- |
| `metrics` / `FHIR_METRICS` | on | `off`: no `GET /metrics`, nothing counted |
| `metrics_token` / `FHIR_METRICS_TOKEN` | none | the bearer token `GET /metrics` asks for (auth on, none set: 401) |
| `log_format` / `FHIR_LOG_FORMAT` | text | `json`: one JSON object per log line, with `request_id` |
| `otel` / `FHIR_OTEL` | off | `on`: OpenTelemetry spans by OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fhir_server.config import Settings

_ON = ("on", "1", "true", "yes")


def _option(settings: Settings | None, key: str, variable: str, default: str) -> str:
    extra = settings.extra if settings is not None else {}
    return str(extra.get(key) or os.environ.get(variable) or default).lower()


def _secret(settings: Settings | None, key: str, variable: str) -> str | None:
    """A secret keeps its case (an option word is lowered)."""
    extra = settings.extra if settings is not None else {}
    return str(extra.get(key) or os.environ.get(variable) or "") or None


@dataclass(frozen=True)
class ObservabilitySettings:
    metrics: bool = True
    log_format: str = "text"
    otel: bool = False
    metrics_token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ObservabilitySettings:
        log_format = _option(settings, "log_format", "FHIR_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise ValueError(f"FHIR_LOG_FORMAT must be text or json, not {log_format!r}")
        return cls(
            metrics=_option(settings, "metrics", "FHIR_METRICS", "on") in _ON,
            log_format=log_format,
            otel=_option(settings, "otel", "FHIR_OTEL", "off") in _ON,
            metrics_token=_secret(settings, "metrics_token", "FHIR_METRICS_TOKEN"),
        )
