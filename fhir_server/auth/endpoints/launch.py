"""POST /launch: the launch API an EHR calls before opening a SMART app. Body (JSON):
patient, encounter, fhirUser, need_patient_banner, smart_style_url, intent; answer: the
`launch` value to put on the app's launch URL."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from fhir_server.auth.endpoints._common import NO_STORE
from fhir_server.auth.runtime import auth_runtime
from fhir_server.auth.settings import AuthSettings

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_FHIR_USER = re.compile(r"^(Practitioner|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "error_description": description},
                        status_code=status, headers=NO_STORE)


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.post("/launch", include_in_schema=False)
    async def create_launch(request: Request) -> JSONResponse:
        expected = settings.launch_api_token
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected.encode()
        ):
            return JSONResponse({"error": "invalid_token"}, status_code=401,
                                headers={**NO_STORE, "WWW-Authenticate": "Bearer"})
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            return _error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        patient, encounter, fhir_user = (body.get(k) for k in ("patient", "encounter",
                                                                "fhirUser"))
        for name, value, pattern in (("patient", patient, _ID), ("encounter", encounter, _ID),
                                     ("fhirUser", fhir_user, _FHIR_USER)):
            if value is not None and not (isinstance(value, str) and pattern.match(value)):
                return _error(400, f"{name} is malformed")
        style = body.get("smart_style_url")
        intent = body.get("intent")
        context = await auth_runtime(request).launches.create(
            ttl_seconds=settings.launch_ttl, patient=patient, encounter=encounter,
            fhir_user=fhir_user, need_patient_banner=bool(body.get("need_patient_banner", True)),
            smart_style_url=style if isinstance(style, str) else None,
            intent=intent if isinstance(intent, str) else None,
        )
        return JSONResponse({"launch": context.launch_id, "expires_in": settings.launch_ttl,
                             "iss": settings.audience}, status_code=201, headers=NO_STORE)

    return api
