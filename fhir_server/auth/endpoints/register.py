"""POST /register: RFC 7591 dynamic client registration, open only to holders of the initial
access token from configuration."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from fhir_server.auth.clients import RegistrationError
from fhir_server.auth.endpoints._common import NO_STORE
from fhir_server.auth.runtime import auth_runtime
from fhir_server.auth.settings import AuthSettings


def _error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description},
                        status_code=status, headers={**NO_STORE, **headers})


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.post("/register", include_in_schema=False)
    async def register(request: Request) -> JSONResponse:
        expected = settings.initial_access_token
        if not expected:
            return _error(403, "access_denied", "dynamic registration is not enabled")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected.encode()
        ):
            return _error(401, "invalid_token", "initial access token required",
                          **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
        try:
            metadata: Any = json.loads(await request.body())
        except ValueError:
            return _error(400, "invalid_client_metadata", "body must be JSON")
        if not isinstance(metadata, dict):
            return _error(400, "invalid_client_metadata", "body must be a JSON object")
        try:
            client, secret = await auth_runtime(request).clients.register(metadata)
        except RegistrationError as exc:
            return _error(400, exc.error, str(exc))
        body = client.metadata()
        if secret is not None:
            body["client_secret"] = secret
            body["client_secret_expires_at"] = 0
        return JSONResponse(body, status_code=201, headers=NO_STORE)

    return api
