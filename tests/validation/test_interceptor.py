"""The validation interceptor at BEFORE_CREATE / BEFORE_UPDATE, through the hook registry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fhir_server.context import RequestContext
from fhir_server.errors import InvalidResource, StructureInvalid
from fhir_server.hooks import HookRegistry, Pointcut
from fhir_server.validation import Validator
from interceptors.registry import ORDER
from interceptors.validation import ValidationInterceptor
from tests.validation.helpers import task


def _registry(validator: Validator) -> HookRegistry:
    hooks = HookRegistry()
    hooks.register(ValidationInterceptor(validator), ORDER["validation"])
    return hooks


def _create(hooks: HookRegistry, context: RequestContext, resource: dict[str, Any]) -> None:
    asyncio.run(hooks.call(Pointcut.BEFORE_CREATE, context=context, resource=resource))


def test_hooks_are_registered_first(validator: Validator) -> None:
    hooks = _registry(validator)
    assert [order for order, _ in hooks.names(Pointcut.BEFORE_CREATE)] == [ORDER["validation"]]
    assert [order for order, _ in hooks.names(Pointcut.BEFORE_UPDATE)] == [ORDER["validation"]]
    # Before every other interceptor's writes hooks (audit's first slot only notes requests).
    assert ORDER["validation"] == min(n for name, n in ORDER.items() if name != "audit-track")


def test_invalid_resources_stop_the_write(validator: Validator) -> None:
    hooks = _registry(validator)
    context = RequestContext(base_url="http://x/fhir", resource_type="Task")
    with pytest.raises(StructureInvalid):
        _create(hooks, context, {"resourceType": "Task"})
    with pytest.raises(InvalidResource):
        asyncio.run(hooks.call(Pointcut.BEFORE_UPDATE, context=context,
                               resource=task(status="bogus"), previous=task()))


def test_warnings_are_kept_for_the_response(validator: Validator) -> None:
    hooks = _registry(validator)
    context = RequestContext(base_url="http://x/fhir", resource_type="Task")
    _create(hooks, context, task(meta={"profile": ["http://example.org/unknown"]}))
    [warning] = context.attributes["validation_warnings"]
    assert warning.code == "not-supported"
    _create(hooks, RequestContext(base_url="http://x/fhir"), task())
