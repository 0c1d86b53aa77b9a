"""Start-up of the auth subsystem: indexes, signing keys, and a loud warning in dev mode."""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.indexes import ensure_auth_indexes
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.settings import AuthSettings

log = logging.getLogger("fhir_server.auth")

DEV_MODE_BANNER = (
    "AUTHORIZATION IS DISABLED (FHIR_AUTH_DISABLED=1): every request is served without a "
    "token and without scope checks. Never run like this with real data."
)


async def start_auth(settings: AuthSettings, db: AsyncDatabase[dict[str, Any]]) -> None:
    """Creates the auth indexes and, on first start or when due, the signing keys."""
    if not settings.enabled:
        log.warning("*" * 78)
        log.warning(DEV_MODE_BANNER)
        log.warning("*" * 78)
    await ensure_auth_indexes(db)
    await KeyStore(db).ensure_keys(
        rotate_after_seconds=settings.key_rotation_seconds,
        retain_seconds=settings.max_token_ttl + settings.clock_skew_seconds,
    )
