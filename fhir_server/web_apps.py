"""The server's own SMART apps (the coordinator dashboard, the patient portal): their client
registrations and their files.

Each app is a public SMART client (no secret; PKCE, S256) with a fixed client_id, registered
at every start-up with the redirect URI under this server's origin, so that `make run` gives a
person something to open. The apps get no private door: they call the FHIR API with the user's
own token, and scopes, Consent and audit apply to them as to any client. Their built files
(`make apps`: TypeScript compiled by npm into apps/dist/, never committed) are served under
/apps/<name>/, with /apps/<name>/config.json telling the app its client_id, the FHIR base and
the scopes to ask. docs/apps.md says how an EHR registers them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pymongo.asynchronous.database import AsyncDatabase
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from fhir_server.auth.clients import Client, ClientRegistry
from fhir_server.config import Settings

DEFAULT_APPS_DIR = Path(__file__).resolve().parent.parent / "apps" / "dist"


@dataclass(frozen=True)
class WebApp:
    name: str  # its path under /apps/
    client_id: str
    title: str
    # What the app asks for at a standalone launch (an EHR launch adds `launch`); its
    # registration allows no more.
    scope: str


COORDINATOR = WebApp(
    "coordinator", "coordinator-dashboard", "Coordinator dashboard",
    "openid fhirUser user/Task.cruds user/Patient.rs user/Practitioner.rs "
    "user/PractitionerRole.rs user/Organization.rs user/CareTeam.rs user/CarePlan.rs "
    "user/Appointment.cruds user/Communication.crs user/DocumentReference.rs user/DetectedIssue.rs "
    "user/ServiceRequest.rs user/Slot.rs user/Schedule.rs user/Encounter.rs user/Goal.rs "
    # The live views: each open view creates, binds and deletes its own websocket Subscription.
    "user/Subscription.cruds")
PORTAL = WebApp(
    "portal", "patient-portal", "Patient portal",
    # Patient.u: the communication preferences; Task.u: a questionnaire Task's output;
    # Consent.cru: grants and revocations (a family member's token is refused them anyway).
    "openid fhirUser launch/patient patient/Patient.rus patient/Appointment.rs patient/CarePlan.rs "
    "patient/Goal.rs patient/Communication.crs patient/DocumentReference.rs patient/Binary.r "
    "patient/Task.rus patient/Questionnaire.rs patient/QuestionnaireResponse.crs patient/Consent.crus "
    "patient/RelatedPerson.rs patient/Encounter.rs "
    # The live views: each open view creates, binds and deletes its own websocket Subscription.
    "patient/Subscription.cruds")
APPS = (COORDINATOR, PORTAL)
SHARED = ("shared", "vendor")


def app_origin(settings: Settings) -> str:
    base = settings.base_url.rstrip("/")
    prefix = settings.path_prefix.rstrip("/")
    return base[: -len(prefix)] if prefix and base.endswith(prefix) else base


def client_of(app: WebApp, settings: Settings) -> Client:
    return Client(client_id=app.client_id, client_name=app.title, auth_method="none",
                  redirect_uris=(f"{app_origin(settings)}/apps/{app.name}/",),
                  grant_types=("authorization_code",), scope=f"launch {app.scope}",
                  issued_at=int(time.time()))


async def register_web_apps(db: AsyncDatabase[dict[str, Any]], settings: Settings) -> None:
    registry = ClientRegistry(db)
    for app in APPS:
        await registry.ensure(client_of(app, settings))


def build_web_apps_router(settings: Settings, apps_dir: Path = DEFAULT_APPS_DIR) -> APIRouter:
    router = APIRouter()
    by_name = {app.name: app for app in APPS}

    def _app(name: str) -> WebApp:
        app = by_name.get(name)
        if app is None:
            raise HTTPException(404, f"no app named {name[:40]!r}")
        return app

    @router.get("/apps/{name}", include_in_schema=False)
    async def without_slash(name: str) -> Response:
        return RedirectResponse(f"/apps/{_app(name).name}/", status_code=308)

    @router.get("/apps/{name}/config.json", include_in_schema=False)
    async def config(name: str) -> Response:
        app = _app(name)
        return JSONResponse({"clientId": app.client_id, "iss": settings.base_url, "scope": app.scope,
                             "title": app.title})

    @router.get("/apps/{name}/{path:path}", include_in_schema=False)
    async def files(name: str, path: str) -> Response:
        # An app's own folder, or what the apps share (their common code, the vendored
        # browser libraries).
        folder = name if name in SHARED else _app(name).name
        root = (apps_dir / folder).resolve()
        if not root.is_dir():
            return Response("The apps are not built: run `make apps` (npm builds apps/dist/).\n",
                            status_code=404, media_type="text/plain")
        target = (root / (path or "index.html")).resolve()
        # Only files inside that folder; nothing else of the disk.
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(target, headers=_HEADERS)

    return router


# The pages load nothing from elsewhere (no CDN); they talk to this server only.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
