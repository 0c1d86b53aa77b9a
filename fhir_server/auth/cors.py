"""CORS for browser SMART apps: they run on their own origin and call our discovery, token and
FHIR endpoints with `fetch`. The CapabilityStatement says `cors: true`; this makes it so.

Any origin may call: access is carried by bearer tokens in the Authorization header, never by
cookies, so no credentials are allowed and a page learns nothing it could not fetch from a
server. The authorize endpoint is a top-level navigation and needs no CORS.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

# Response headers a FHIR client reads beyond the CORS-safelisted ones.
EXPOSED_HEADERS = ["Location", "Content-Location", "ETag", "Last-Modified", "WWW-Authenticate",
                   "X-Security-Context"]
PREFLIGHT_MAX_AGE = 600


def install_cors(app: Starlette) -> None:
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["*"],
        allow_credentials=False,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE,
    )
