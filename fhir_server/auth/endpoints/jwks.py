"""GET /jwks: our public signing keys, including retired ones whose tokens may still live."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from fhir_server.auth.runtime import auth_runtime
from fhir_server.auth.settings import AuthSettings


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.get("/jwks", include_in_schema=False)
    async def jwks(request: Request) -> JSONResponse:
        document = await auth_runtime(request).keys.public_jwks()
        return JSONResponse(document, headers={"Cache-Control": "public, max-age=60"})

    return api
