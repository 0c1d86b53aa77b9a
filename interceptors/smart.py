"""SMART authentication at INCOMING_REQUEST: every request (but discovery) gets a principal
from its Bearer token or is refused (401). Registered only when auth is enabled
(`build_smart_interceptor`). What the principal may do is the access decision's question
(fhir_server.access, interceptors/access.py): a context without a principal is refused there.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import DEV_MODE_BANNER
from fhir_server.auth.tokens import InvalidToken, TokenValidator
from fhir_server.context import RequestContext
from fhir_server.errors import Unauthorized
from fhir_server.hooks import Pointcut, hook

log = logging.getLogger(__name__)

# Interactions served without a token (discovery).
PUBLIC_INTERACTIONS = frozenset({"capabilities", "smart-configuration"})


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="fhir"'
    if error:
        value += f', error="{error}"'
    if description:
        safe = description.replace('"', "'").replace("\\", "/")
        value += f', error_description="{safe}"'
    return {"WWW-Authenticate": value}


class SmartInterceptor:
    def __init__(self, validator: TokenValidator) -> None:
        self.validator = validator

    # -- authentication -------------------------------------------------------------------

    @hook(Pointcut.INCOMING_REQUEST)
    async def authenticate(self, context: RequestContext) -> None:
        if context.interaction in PUBLIC_INTERACTIONS:
            return
        header = context.attributes.get("authorization")
        if not header:
            raise Unauthorized("Authentication required: send a Bearer access token",
                               headers=_challenge())
        scheme, _, token = str(header).strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must use the Bearer scheme",
                               headers=_challenge("invalid_request"))
        try:
            context.principal = await self.validator.validate(token)
        except InvalidToken as exc:
            raise Unauthorized(f"Invalid access token: {exc}",
                               headers=_challenge("invalid_token", str(exc))) from exc


def build_smart_interceptor(
    settings: AuthSettings, db: AsyncDatabase[dict[str, Any]]
) -> SmartInterceptor | None:
    """The interceptor to register, or None (after a loud warning) in dev mode."""
    if not settings.enabled:
        log.warning(DEV_MODE_BANNER)
        return None
    return SmartInterceptor(TokenValidator(settings, db))
