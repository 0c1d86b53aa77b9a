"""Structured logs: with `FHIR_LOG_FORMAT=json`, one JSON object per line (time, level,
logger, message, request_id, exception), for log shippers; the request id is the one the
response's `X-Request-Id` header and the AuditEvent carry."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from fhir_server import requestid


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (`%(request_id)s` in text formats)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = requestid.current()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or requestid.current()
        if request_id:
            out["request_id"] = request_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(log_format: str) -> None:
    """Sets the root handler's format (and uvicorn's, which has its own handlers)."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
