"""Validation, the first built-in interceptor: every create and update is checked before it
is stored (order 10, ahead of SMART scopes and Consent, so a malformed body is refused as
such whoever sends it).

Errors stop the interaction with StructureInvalid (400) or InvalidResource (422), carrying
every issue. Warnings (an unknown profile, ...) are kept in
`context.attributes["validation_warnings"]` for the response's OperationOutcome.
"""

from __future__ import annotations

from typing import Any

from fhir_server.context import RequestContext
from fhir_server.hooks import Pointcut, hook
from fhir_server.validation import Validator

WARNINGS = "validation_warnings"


class ValidationInterceptor:
    def __init__(self, validator: Validator) -> None:
        self.validator = validator

    def _check(self, context: RequestContext, resource: dict[str, Any]) -> None:
        # No resource_type: the router has matched the body's type to the URL already, and a
        # batch entry's context names the Bundle, not the entry.
        result = self.validator.validate(resource)
        result.raise_for_errors()
        if result.warnings:
            context.attributes.setdefault(WARNINGS, []).extend(result.warnings)

    @hook(Pointcut.BEFORE_CREATE)
    def before_create(self, context: RequestContext, resource: dict[str, Any]) -> None:
        self._check(context, resource)

    @hook(Pointcut.BEFORE_UPDATE)
    def before_update(
        self, context: RequestContext, resource: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        self._check(context, resource)
