"""Exception handlers: every error leaves as an OperationOutcome with its status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pymongo.errors import ConnectionFailure, OperationFailure
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from fhir_server.errors import DatabaseUnavailable, FhirError, InternalError, Issue, operation_outcome
from fhir_server.storage.database import INTERNAL_ERROR, RETRY_AFTER_INTERNAL_ERROR

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json; charset=utf-8"

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


def outcome_response(error: FhirError) -> Response:
    headers = dict(error.headers)
    return Response(
        orjson.dumps(error.to_outcome()), status_code=error.status,
        media_type=FHIR_JSON, headers=headers,
    )


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return outcome_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        detail = f"No FHIR interaction at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    body = operation_outcome([Issue("error", code, detail)])
    return Response(
        orjson.dumps(body), status_code=exc.status_code, media_type=FHIR_JSON,
        headers=dict(exc.headers or {}),
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    body = operation_outcome([Issue("error", "invalid", "The request is malformed")])
    return Response(orjson.dumps(body), status_code=400, media_type=FHIR_JSON)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug. Log it with the request id; the client still gets an OperationOutcome.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return outcome_response(InternalError("Internal server error"))


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed the connection before its body was in (a tab closed mid-request):
    # nothing was written and nobody reads the answer, so it is no server error to log.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    body = operation_outcome([Issue("error", "incomplete", "The client disconnected before its request was complete")])
    return Response(orjson.dumps(body), status_code=400, media_type=FHIR_JSON)


def _database_unavailable(retry_after: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        # The database is down or restarting (the driver could not reach it in time): a
        # transient condition, not a bug. Nothing was acknowledged, so the client may retry.
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
        return outcome_response(DatabaseUnavailable.after(retry_after))
    return handler


async def _database_failed(request: Request, exc: Exception) -> Response:
    # The database answered with its own InternalError (a fault inside it, not in the request):
    # what failed was not acknowledged, so 503 and a retry, as for a database that is down.
    # Any other refusal of a command is a bug of ours, answered as one.
    assert isinstance(exc, OperationFailure)
    if exc.code != INTERNAL_ERROR:
        return await _unexpected(request, exc)
    log.warning("the database failed %s %s: %s", request.method, request.url.path, exc)
    return outcome_response(DatabaseUnavailable.after(RETRY_AFTER_INTERNAL_ERROR))


def install(app: FastAPI, *, retry_after: int = 5) -> None:
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(ConnectionFailure, _database_unavailable(retry_after))
    app.add_exception_handler(OperationFailure, _database_failed)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
