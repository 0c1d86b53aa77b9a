"""SMART enforcement at the hook points: authentication, write scopes, query filters, and the
per-resource check. Registered only when auth is enabled (`build_smart_interceptor`).

A context without a principal is the server's own work (RequestContext.system); every HTTP
request gets a principal at INCOMING_REQUEST or is refused there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.granular import matches_params, patient_compartments
from fhir_server.auth.scopes import Access, Grant, decide, parse_scope_set
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import DEV_MODE_BANNER
from fhir_server.auth.tokens import InvalidToken, TokenValidator
from fhir_server.context import Principal, RequestContext
from fhir_server.errors import Forbidden, Unauthorized
from fhir_server.hooks import AccessQuery, Pointcut, hook

log = logging.getLogger(__name__)

# The field the repository stores on every document: ids of the Patients whose compartment
# holds it.
COMPARTMENT_FIELD = "compartments.Patient"
# Interactions served without a token (discovery).
PUBLIC_INTERACTIONS = frozenset({"capabilities", "smart-configuration"})
# Read-type interactions keep their own permission letter only for the resource they name;
# any other type they touch (_include, _revinclude) is searched.
_DIRECT = frozenset({"read", "vread", "history", "history-instance"})
# A write looks up what it changes with its own permission letter (c/u/d), not with read:
# write scopes do not imply read, and read scopes do not let a client change anything.
_WRITES = frozenset({"create", "update", "patch", "delete"})

# (resource type, [(param, value)]) -> MongoDB filter; supplied by the search layer.
FilterBuilder = Callable[[str, list[tuple[str, str]]], dict[str, Any]]
# (resource, [(param, value)]) -> bool
Matcher = Callable[[dict[str, Any], list[tuple[str, str]]], bool]
CompartmentOf = Callable[[dict[str, Any]], Iterable[str]]


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="fhir"'
    if error:
        value += f', error="{error}"'
    if description:
        safe = description.replace('"', "'").replace("\\", "/")
        value += f', error_description="{safe}"'
    return {"WWW-Authenticate": value}


class SmartInterceptor:
    def __init__(
        self,
        validator: TokenValidator,
        *,
        filter_builder: FilterBuilder | None = None,
        matcher: Matcher = matches_params,
        compartment_of: CompartmentOf = patient_compartments,
    ) -> None:
        self.validator = validator
        self.filter_builder = filter_builder
        self.matcher = matcher
        self.compartment_of = compartment_of

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

    # -- decisions ------------------------------------------------------------------------

    def _access(self, principal: Principal, resource_type: str, interaction: str) -> Access:
        return decide(parse_scope_set(principal.scopes), resource_type, interaction,
                      principal.patient)

    def _grant_holds(self, grant: Grant, resource: dict[str, Any]) -> bool:
        if grant.patient is not None and grant.patient not in self.compartment_of(resource):
            return False
        return not grant.params or self.matcher(resource, list(grant.params))

    def _holds(self, access: Access, resource: dict[str, Any]) -> bool:
        return access.unrestricted or any(self._grant_holds(g, resource) for g in access.grants)

    def _check_write(self, context: RequestContext, interaction: str,
                     *resources: dict[str, Any] | None) -> None:
        principal = context.principal
        if principal is None:
            return
        present = [r for r in resources if r is not None]
        resource_type = str(
            (present[0].get("resourceType") if present else None) or context.resource_type
        )
        access = self._access(principal, resource_type, interaction)
        if not access.allowed:
            raise Forbidden(f"The access token does not allow {interaction} on {resource_type}")
        if not all(self._holds(access, r) for r in present):
            raise Forbidden(f"The access token does not allow {interaction} on this "
                            f"{resource_type} (outside the patient in context or the scope)")

    @hook(Pointcut.BEFORE_CREATE)
    def before_create(self, context: RequestContext, resource: dict[str, Any]) -> None:
        self._check_write(context, "create", resource)

    @hook(Pointcut.BEFORE_UPDATE)
    def before_update(self, context: RequestContext, resource: dict[str, Any],
                      previous: dict[str, Any] | None) -> None:
        interaction = "patch" if context.interaction == "patch" else "update"
        # Update-as-create (no previous version) needs the create permission too.
        if previous is None:
            self._check_write(context, "create", resource)
        self._check_write(context, interaction, resource, previous)

    @hook(Pointcut.BEFORE_DELETE)
    def before_delete(self, context: RequestContext, previous: dict[str, Any] | None) -> None:
        self._check_write(context, "delete", previous)

    def _read_interaction(self, context: RequestContext, resource_type: str) -> str:
        if context.interaction in _WRITES and resource_type == context.resource_type:
            return context.interaction
        if context.interaction in _DIRECT and resource_type == context.resource_type:
            if context.interaction == "history" and context.resource_id is None:
                return "history-type"  # a type's or the system's history is a search
            return context.interaction
        return "search"

    @hook(Pointcut.FILTER_QUERY)
    def filter_query(self, context: RequestContext, resource_type: str,
                     query: AccessQuery) -> None:
        principal = context.principal
        if principal is None:
            return
        interaction = self._read_interaction(context, resource_type)
        access = self._access(principal, resource_type, interaction)
        if not access.allowed:
            if interaction not in ("search", "history-type"):
                # A direct read or write of a type the token may not touch that way at all:
                # say so. (A resource merely outside the compartment stays a silent 404.)
                raise Forbidden(f"The access token does not allow {interaction} on "
                                f"{resource_type}")
            query.add({"_id": {"$in": []}})
            return
        if access.unrestricted:
            return
        alternatives: list[dict[str, Any]] = []
        for grant in access.grants:
            parts: list[dict[str, Any]] = []
            if grant.patient is not None:
                parts.append({COMPARTMENT_FIELD: grant.patient})
            if grant.params and self.filter_builder is not None:
                parts.append(self.filter_builder(resource_type, list(grant.params)))
            # Without a filter builder the parameters are checked per resource at CAN_SEE.
            if not parts:
                return
            alternatives.append(parts[0] if len(parts) == 1 else {"$and": parts})
        query.add(alternatives[0] if len(alternatives) == 1 else {"$or": alternatives})

    @hook(Pointcut.CAN_SEE)
    def can_see(self, context: RequestContext, resource: dict[str, Any]) -> bool:
        principal = context.principal
        if principal is None:
            return True
        resource_type = str(resource.get("resourceType") or context.resource_type)
        access = self._access(principal, resource_type,
                              self._read_interaction(context, resource_type))
        return access.allowed and self._holds(access, resource)


def build_smart_interceptor(
    settings: AuthSettings, db: AsyncDatabase[dict[str, Any]], **options: Any
) -> SmartInterceptor | None:
    """The interceptor to register, or None (after a loud warning) in dev mode."""
    if not settings.enabled:
        log.warning(DEV_MODE_BANNER)
        return None
    return SmartInterceptor(TokenValidator(settings, db), **options)
