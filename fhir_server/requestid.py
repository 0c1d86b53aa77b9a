"""The request id (a leaf module, so the request context can carry it without the context
reaching up into `observability`): taken from the client's `X-Request-Id` when it is a sane token, else made
here; it names the request in every log line (`logs`), in the response's `X-Request-Id`
header and in the request's AuditEvent (`RequestContext.request_id` reads it)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_CURRENT: ContextVar[str | None] = ContextVar("fhir_request_id", default=None)


def current() -> str | None:
    """The id of the request being served (None outside a request)."""
    return _CURRENT.get()


def new_id() -> str:
    """The id for a context made outside a request (the engine's work) or the current one."""
    return _CURRENT.get() or uuid.uuid4().hex


def from_headers(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is a sane token (an id it can find again in our
    logs and AuditEvents), else a new one; never an arbitrary string in a log or event."""
    for name, value in headers:
        if name == HEADER and _VALID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


def bind(request_id: str) -> object:
    return _CURRENT.set(request_id)


def unbind(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]
