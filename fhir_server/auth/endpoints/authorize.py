"""GET and POST /authorize: the authorization code flow with PKCE S256, EHR and standalone
launch, login (password + TOTP) and the patient picker. POST accepts the initial request
too (SMART `authorize-post`)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from fhir_server.auth.clients import Client
from fhir_server.auth.endpoints._pages import error_page, login_page, patient_picker
from fhir_server.auth.grants import CodeGrant, GrantContext
from fhir_server.auth.launch import LaunchContext
from fhir_server.auth.runtime import AuthRuntime, auth_runtime
from fhir_server.auth.scopes import narrow_scopes, parse_scope, split_scope_string
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.users import User

# The OAuth parameters carried through the login and picker pages as hidden fields. They are
# re-validated on every POST, so a tampered field gains nothing.
OAUTH_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud",
                "launch", "code_challenge", "code_challenge_method", "nonce")
_PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


class AuthorizeError(Exception):
    """An error reported to the client by redirect (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _redirect(uri: str, params: dict[str, str], status: int) -> RedirectResponse:
    sep = "&" if "?" in uri else "?"
    return RedirectResponse(f"{uri}{sep}{urlencode(params)}", status_code=status,
                            headers={"Cache-Control": "no-store"})


def _granted_scopes(client: Client, requested: list[str], user: User | None) -> list[str]:
    granted = narrow_scopes(requested, client.allowed_scopes) if client.scope else requested
    out = []
    for text in granted:
        scope = parse_scope(text)
        if scope is not None and scope.context == "system":
            continue  # system/ scopes belong to Backend Services, never to a user's grant
        if (scope is not None and scope.context == "user" and user is not None
                and user.user_type != "Practitioner"):
            continue  # patients and related persons see their own compartment only
        out.append(text)
    return out


def _check_request(settings: AuthSettings, params: dict[str, str]) -> None:
    if params.get("response_type") != "code":
        raise AuthorizeError("unsupported_response_type", "response_type must be code")
    if not params.get("state"):
        raise AuthorizeError("invalid_request", "state is required")
    if params.get("code_challenge_method") != "S256":
        raise AuthorizeError("invalid_request", "PKCE with code_challenge_method S256 required"
                             " (plain is not accepted)")
    if not _CHALLENGE.match(params.get("code_challenge", "")):
        raise AuthorizeError("invalid_request", "code_challenge missing or malformed")
    if params.get("aud", "").rstrip("/") != settings.audience.rstrip("/"):
        raise AuthorizeError("invalid_request", f"aud must be {settings.audience}")


async def _current_user(
    runtime: AuthRuntime, params: dict[str, str], launch: LaunchContext | None
) -> tuple[User | None, str, str]:
    """(user, login ticket, error message) from a ticket, submitted credentials, or an EHR
    launch that names the user."""
    ticket = params.get("login_ticket", "")
    if ticket:
        username = await runtime.grants.login_user(ticket)
        user = await runtime.users.get(username) if username else None
        if user is not None:
            return user, ticket, ""
    if "username" in params:
        user = await runtime.users.authenticate(
            params["username"], params.get("password", ""), params.get("totp", "").strip()
        )
        if user is None:
            return None, "", "Unknown user, wrong password or wrong one-time code."
        ticket = await runtime.grants.start_login(user.username, runtime.settings.login_ttl)
        return user, ticket, ""
    if launch is not None and launch.fhir_user:
        # The EHR created this launch for a user it has signed in (single sign-on).
        return User(launch.fhir_user, launch.fhir_user, False), "", ""
    return None, "", ""


async def _authorize(
    runtime: AuthRuntime, request: Request, params: dict[str, str]
) -> Response:
    settings = runtime.settings
    action = str(request.url_for("smart_authorize"))
    client = await runtime.clients.get(params.get("client_id", ""))
    if client is None or "authorization_code" not in client.grant_types:
        return error_page("Unknown client_id.")
    redirect_uri = params.get("redirect_uri") or (
        client.redirect_uris[0] if len(client.redirect_uris) == 1 else ""
    )
    if redirect_uri not in client.redirect_uris:
        return error_page("redirect_uri is not registered for this client.")
    status = 303 if request.method == "POST" else 302
    state = params.get("state", "")
    try:
        _check_request(settings, params)
        requested = split_scope_string(params.get("scope"))
        launch: LaunchContext | None = None
        if params.get("launch"):
            launch = await runtime.launches.get(params["launch"])
            if launch is None:
                raise AuthorizeError("invalid_request", "launch is unknown or expired")
        elif "launch" in requested:
            raise AuthorizeError("invalid_request", "scope launch needs a launch parameter")
    except AuthorizeError as exc:
        out = {"error": exc.error, "error_description": exc.description}
        if state:
            out["state"] = state
        return _redirect(redirect_uri, out, status)

    fields = {k: params[k] for k in OAUTH_PARAMS if params.get(k)}
    fields["redirect_uri"] = redirect_uri
    user, ticket, error = await _current_user(runtime, params, launch)
    if user is None:
        return login_page(action, fields, client.client_name or client.client_id, error)

    scopes = _granted_scopes(client, requested, user)
    patient = launch.patient if launch else None
    wants_patient = "launch/patient" in scopes or any(
        (s := parse_scope(t)) is not None and s.context == "patient" for t in scopes
    )
    if patient is None and wants_patient:
        if user.user_type == "Patient":
            patient = user.resource_id
        else:
            choice = params.get("patient", "")
            allowed = user.patients
            valid = bool(_PATIENT_ID.match(choice)) and (not allowed or choice in allowed)
            if not valid:
                if ticket:
                    fields["login_ticket"] = ticket
                message = "Choose one of the listed patients." if choice else ""
                return patient_picker(action, fields, allowed, message)
            patient = choice
    context = GrantContext(
        client_id=client.client_id,
        scopes=tuple(scopes),
        username=user.username,
        fhir_user=user.fhir_user,
        patient=patient,
        encounter=launch.encounter if launch else None,
        need_patient_banner=launch.need_patient_banner if launch else patient is not None,
        smart_style_url=launch.smart_style_url if launch else None,
        nonce=params.get("nonce") or None,
    )
    code = await runtime.grants.issue_code(
        CodeGrant(context, redirect_uri, params["code_challenge"]), settings.code_ttl
    )
    return _redirect(redirect_uri, {"code": code, "state": state}, status)


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.get("/authorize", name="smart_authorize", include_in_schema=False)
    async def authorize_get(request: Request) -> Response:
        params = dict(request.query_params)
        params = {k: v for k, v in params.items() if k in OAUTH_PARAMS}
        return await _authorize(auth_runtime(request), request, params)

    @api.post("/authorize", include_in_schema=False)
    async def authorize_post(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return error_page("The form must be application/x-www-form-urlencoded.")
        body = (await request.body())[:64 * 1024].decode("utf-8", "replace")
        params = dict(parse_qsl(body, keep_blank_values=True))
        return await _authorize(auth_runtime(request), request, params)

    return api
