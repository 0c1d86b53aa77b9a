"""The dispatch rules of the hook registry (fhir_server.hooks): VOID hooks all run, a
BOOLEAN hook point stops at the first False, a VALUE hook point at the first answer that is
not None, and hooks run by number whatever order they were registered in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fhir_server.context import RequestContext
from fhir_server.errors import Forbidden
from fhir_server.hooks import HookRegistry, Pointcut, RegistryFrozen, hook

CONTEXT = RequestContext(base_url="http://x/fhir")
RESOURCE = {"resourceType": "Patient", "id": "p"}


def _call(hooks: HookRegistry, pointcut: Pointcut, **kwargs: Any) -> Any:
    return asyncio.run(hooks.call(pointcut, **kwargs))


def _answering(ran: list[str], name: str, answer: Any) -> Any:
    def fn(context: RequestContext, resource: dict[str, Any]) -> Any:
        ran.append(name)
        return answer

    return fn


def test_boolean_stops_at_the_first_false() -> None:
    hooks, ran = HookRegistry(), []
    hooks.add(Pointcut.CAN_SEE, _answering(ran, "first", True), 10)
    hooks.add(Pointcut.CAN_SEE, _answering(ran, "refuses", False), 20)
    hooks.add(Pointcut.CAN_SEE, _answering(ran, "never", True), 30)
    assert _call(hooks, Pointcut.CAN_SEE, context=CONTEXT, resource=RESOURCE) is False
    assert ran == ["first", "refuses"]


def test_boolean_is_true_when_no_hook_says_false() -> None:
    hooks, ran = HookRegistry(), []
    hooks.add(Pointcut.CAN_SEE, _answering(ran, "yes", True), 10)
    # None is not False: a hook with nothing to say lets the resource pass.
    hooks.add(Pointcut.CAN_SEE, _answering(ran, "silent", None), 20)
    # Only False refuses; a falsy value of another kind does not.
    hooks.add(Pointcut.CAN_SEE, _answering(ran, "zero", 0), 30)
    assert _call(hooks, Pointcut.CAN_SEE, context=CONTEXT, resource=RESOURCE) is True
    assert ran == ["yes", "silent", "zero"]
    assert _call(HookRegistry(), Pointcut.CAN_SEE, context=CONTEXT, resource=RESOURCE) is True


def test_value_stops_at_the_first_answer_not_none() -> None:
    hooks, ran = HookRegistry(), []
    masked = {"resourceType": "Patient", "id": "p", "meta": {"security": [{"code": "MASKED"}]}}
    hooks.add(Pointcut.WILL_SEE, _answering(ran, "nothing", None), 10)
    hooks.add(Pointcut.WILL_SEE, _answering(ran, "masks", masked), 20)
    hooks.add(Pointcut.WILL_SEE, _answering(ran, "never", RESOURCE), 30)
    assert _call(hooks, Pointcut.WILL_SEE, context=CONTEXT, resource=RESOURCE) is masked
    assert ran == ["nothing", "masks"]


def test_value_takes_a_falsy_answer_and_none_when_nobody_answers() -> None:
    hooks, ran = HookRegistry(), []
    hooks.add(Pointcut.WILL_SEE, _answering(ran, "empty", {}), 10)
    hooks.add(Pointcut.WILL_SEE, _answering(ran, "never", RESOURCE), 20)
    assert _call(hooks, Pointcut.WILL_SEE, context=CONTEXT, resource=RESOURCE) == {}
    assert ran == ["empty"]
    silent = HookRegistry()
    silent.add(Pointcut.WILL_SEE, _answering(ran, "silent", None), 10)
    assert _call(silent, Pointcut.WILL_SEE, context=CONTEXT, resource=RESOURCE) is None


def test_void_runs_every_hook_and_a_raise_stops_the_interaction() -> None:
    hooks, ran = HookRegistry(), []

    async def noted(context: RequestContext) -> str:
        ran.append("async")
        return "ignored"  # a VOID hook's answer means nothing

    hooks.add(Pointcut.INCOMING_REQUEST, lambda context: ran.append("plain"), 10)
    hooks.add(Pointcut.INCOMING_REQUEST, noted, 20)
    hooks.add(Pointcut.INCOMING_REQUEST, lambda context: ran.append("last"), 30)
    assert _call(hooks, Pointcut.INCOMING_REQUEST, context=CONTEXT) is None
    assert ran == ["plain", "async", "last"]

    def refuse(context: RequestContext) -> None:
        raise Forbidden("no")

    hooks = HookRegistry()
    ran.clear()
    hooks.add(Pointcut.INCOMING_REQUEST, lambda context: ran.append("before"), 10)
    hooks.add(Pointcut.INCOMING_REQUEST, refuse, 20)
    hooks.add(Pointcut.INCOMING_REQUEST, lambda context: ran.append("after"), 30)
    with pytest.raises(Forbidden):
        _call(hooks, Pointcut.INCOMING_REQUEST, context=CONTEXT)
    assert ran == ["before"]


def test_order_is_by_number_not_by_registration() -> None:
    hooks, ran = HookRegistry(), []
    for name, order in (("c", 300), ("a", 10), ("d", 900), ("b", 200), ("b2", 200)):
        hooks.add(Pointcut.INCOMING_REQUEST, lambda context, n=name: ran.append(n), order)
    _call(hooks, Pointcut.INCOMING_REQUEST, context=CONTEXT)
    # Equal numbers keep their registration order.
    assert ran == ["a", "b", "b2", "c", "d"]
    assert [n for n, _ in hooks.names(Pointcut.INCOMING_REQUEST)] == [10, 200, 200, 300, 900]


class _Marked:
    def __init__(self, ran: list[str]) -> None:
        self.ran = ran

    @hook(Pointcut.INCOMING_REQUEST)
    def main(self, context: RequestContext) -> None:
        self.ran.append("main")

    @hook(Pointcut.INCOMING_REQUEST, slot="early")
    def early(self, context: RequestContext) -> None:
        self.ran.append("early")


def test_an_interceptor_runs_at_its_number_and_a_hook_at_its_slot() -> None:
    ran: list[str] = []
    hooks = HookRegistry()
    hooks.register(_Marked(ran), 500, {"early": 1})
    hooks.add(Pointcut.INCOMING_REQUEST, lambda context: ran.append("between"), 100)
    _call(hooks, Pointcut.INCOMING_REQUEST, context=CONTEXT)
    assert ran == ["early", "between", "main"]
    with pytest.raises(KeyError, match="early"):
        HookRegistry().register(_Marked(ran), 500, {})


def test_missing_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match="resource"):
        _call(HookRegistry(), Pointcut.CAN_SEE, context=CONTEXT)


def test_registering_after_freeze_raises() -> None:
    hooks = HookRegistry()
    hooks.add(Pointcut.CAN_SEE, _answering([], "kept", True), 10)
    hooks.freeze()
    assert hooks.frozen
    with pytest.raises(RegistryFrozen):
        hooks.add(Pointcut.CAN_SEE, _answering([], "late", False), 5)
    with pytest.raises(RegistryFrozen):
        hooks.register(_Marked([]), 500, {"early": 1})
    # What was registered before still runs, and nothing else does.
    assert _call(hooks, Pointcut.CAN_SEE, context=CONTEXT, resource=RESOURCE) is True
    assert [n for n, _ in hooks.names(Pointcut.CAN_SEE)] == [10]
