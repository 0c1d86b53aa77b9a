"""Calls the INTERACTION_COMPLETE hooks when the outcome of a request is known.

An ASGI middleware: it notes every RequestContext built for the request (`track`, called
from an INCOMING_REQUEST hook) and, when the response starts (its status known, no byte of
it sent yet), runs INTERACTION_COMPLETE for each. So the audit record of an access exists
before the data leaves; if recording fails, the request fails rather than go unrecorded.

Token issuance (`POST <auth>/token`) builds no RequestContext: for it the middleware makes
one from what it sees, the grant type and the issued token's claims (never the token).
"""

from __future__ import annotations

import base64
import binascii
import logging
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.context import Principal, RequestContext
from fhir_server.hooks import HookRegistry, Pointcut

log = logging.getLogger(__name__)
_CONTEXTS: ContextVar[list[RequestContext] | None] = ContextVar("fhir_request_contexts", default=None)
# Token responses are small: they are held back whole until audited.
MAX_TOKEN_BODY = 64 * 1024


def track(context: RequestContext) -> None:
    """Registers `context` for INTERACTION_COMPLETE at the end of the current request."""
    contexts = _CONTEXTS.get()
    if contexts is not None:
        contexts.append(context)


def _claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_context(base_url: str, scope: Scope, form: dict[str, str], body: bytes) -> RequestContext:
    """The context of a token request, from its form and (if it succeeded) the issued claims."""
    try:
        reply = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        reply = {}
    claims = _claims(str(reply.get("access_token", ""))) if isinstance(reply, dict) else {}
    client = scope.get("client")
    principal = Principal(
        client_id=str(claims.get("client_id") or form.get("client_id") or "") or None,
        fhir_user=str(claims["fhirUser"]) if claims.get("fhirUser") else None,
        patient=str(claims["patient"]) if claims.get("patient") else None,
        scopes=frozenset(str(claims.get("scope", "")).split()),
        token_id=str(claims["jti"]) if claims.get("jti") else None,
        issuer=str(claims["iss"]) if claims.get("iss") else None,
    )
    context = RequestContext(base_url=base_url, interaction="token", method="POST",
                             url=str(scope.get("path", "")), principal=principal,
                             remote_addr=client[0] if client else None)
    context.attributes["grant_type"] = form.get("grant_type", "")
    return context


class InteractionCompletion:
    def __init__(self, app: ASGIApp, token_path: str = "/auth/token") -> None:
        self.app = app
        self.token_path = token_path

    @staticmethod
    def _hooks(scope: Scope) -> HookRegistry | None:
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        hooks: HookRegistry | None = getattr(services, "hooks", None)
        return hooks if hooks is not None and hooks.has(Pointcut.INTERACTION_COMPLETE) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hooks = self._hooks(scope)
        if hooks is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] == self.token_path:
            await self._token(scope, receive, send, hooks)
            return
        contexts: list[RequestContext] = []
        reset = _CONTEXTS.set(contexts)
        completed = False

        async def complete(status: int) -> None:
            nonlocal completed
            completed = True
            for context in contexts:
                await hooks.call(Pointcut.INTERACTION_COMPLETE, context=context, status=status)

        async def send_completed(message: Message) -> None:
            if message["type"] == "http.response.start" and not completed:
                await complete(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_completed)
        except Exception:
            if not completed:
                await complete(500)
            raise
        finally:
            _CONTEXTS.reset(reset)

    async def _token(self, scope: Scope, receive: Receive, send: Send, hooks: HookRegistry) -> None:
        form_body = bytearray()
        held: list[Message] = []

        async def receive_form() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(form_body) < MAX_TOKEN_BODY:
                form_body.extend(message.get("body", b""))
            return message

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive_form, hold)
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        if start is not None:
            services = scope["app"].state.services
            form = dict(parse_qsl(form_body.decode("utf-8", "replace")))
            context = token_context(services.settings.base_url, scope, form, body[:MAX_TOKEN_BODY])
            await hooks.call(Pointcut.INTERACTION_COMPLETE, context=context, status=start["status"])
        for message in held:
            await send(message)
