"""What the server cannot honour is refused when the Subscription is written (422 + outcome)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from subscriptions.endpoints import EndpointPolicy, EndpointRefused
from tests.subscriptions.conftest import BACKPORT, r4_subscription, topic_subscription
from tests.subscriptions.receiver import Receiver

Doc = dict[str, Any]
OK = "http://127.0.0.1:9/hook"  # allow-listed in the test server


def _with(sub: Doc, **channel: Any) -> Doc:
    return {**sub, "channel": {**sub["channel"], **channel}}


REFUSED: dict[str, Doc] = {
    "unknown topic": topic_subscription("http://example.org/SubscriptionTopic/nope", OK),
    "filter not offered by the topic": topic_subscription("task-status", OK, filters=("Task?requester=Practitioner/1",)),
    "filter on another type": topic_subscription("task-status", OK, filters=("Appointment?actor=Practitioner/1",)),
    "chained filter": topic_subscription("task-status", OK, filters=("Task?owner.name=smith",)),
    "filter without criteria": topic_subscription("task-status", OK, filters=("Task?",)),
    "bad filter value": topic_subscription("task-status", OK, filters=("Task?owner:missing=maybe",)),
    "unknown criteria type": r4_subscription("Foo?x=1", OK),
    "unknown criteria parameter": r4_subscription("Task?colour=red", OK),
    "result parameters in criteria": r4_subscription("Task?status=requested&_include=Task:owner", OK),
    "email channel": _with(r4_subscription("Task?status=requested", OK), type="email", endpoint="mailto:a@b.c"),
    "sms channel": _with(r4_subscription("Task?status=requested", OK), type="sms"),
    "xml payload": _with(r4_subscription("Task?status=requested", OK), payload="application/fhir+xml"),
    "unknown payload content": _with(topic_subscription("task-status", OK), _payload={"extension": [
        {"url": BACKPORT + "backport-payload-content", "valueCode": "everything"}]}),
    "rest-hook without endpoint": _with(r4_subscription("Task?status=requested", OK), endpoint=None),
    "bad header": _with(r4_subscription("Task?status=requested", OK), header=["no colon here"]),
    "zero heartbeat": _with(topic_subscription("task-status", OK), extension=[
        {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 0}]),
    "in-process channel from a client": _with(topic_subscription("task-status", OK), type="message",
                                              endpoint="urn:in-process:x", _type={"extension": [
        {"url": BACKPORT + "backport-channel-type", "valueCoding": {
            "system": "http://fhir.care-coord.example/CodeSystem/subscription-channel-type", "code": "in-process"}}]}),
    "private address": r4_subscription("Task?status=requested", "https://10.1.2.3/hook"),
    "link-local (cloud metadata)": r4_subscription("Task?status=requested", "http://169.254.169.254/latest"),
    "loopback not allow-listed": r4_subscription("Task?status=requested", "https://127.0.0.2/hook"),
    "IPv6 loopback": r4_subscription("Task?status=requested", "https://[::1]/hook"),
    "IPv4-mapped IPv6": r4_subscription("Task?status=requested", "https://[::ffff:192.168.0.1]/hook"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_at_create(api: httpx.Client, case: str) -> None:
    body = {k: v for k, v in REFUSED[case].items()}
    body["channel"] = {k: v for k, v in body["channel"].items() if v is not None}
    response = api.post("/Subscription", json=body)
    assert response.status_code == 422, (case, response.text)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"


def test_refused_at_update_too(api: httpx.Client, receiver: Receiver) -> None:
    created = api.post("/Subscription", json=r4_subscription("Task?status=requested", receiver.url)).json()
    changed = _with(created, endpoint="https://10.0.0.8/hook")
    assert api.put(f"/Subscription/{created['id']}", json=changed).status_code == 422
    assert api.get(f"/Subscription/{created['id']}").json()["channel"]["endpoint"] == receiver.url


def test_policy() -> None:
    """The policy alone (no server: a bug here must not send anything anywhere)."""
    policy = EndpointPolicy(("10.0.0.0/8", "hooks.internal"))

    async def check() -> None:
        assert (await policy.check("http://10.9.8.7/x")).url == "http://10.9.8.7/x"
        assert (await policy.check("http://hooks.internal:8080/x")).url == "http://hooks.internal:8080/x"
        public = await policy.check("https://93.184.215.14/x")  # checked, not contacted
        assert public.url == "https://93.184.215.14/x"
        for refused in ("https://192.168.1.1/x", "http://93.184.215.14/plain-http",
                        "https://user:pw@93.184.215.14/x", "ftp://93.184.215.14/x", "https://[fe80::1]/x",
                        "https://0.0.0.0/x", "https://100.64.0.1/x"):
            with pytest.raises(EndpointRefused):
                await policy.check(refused)

        with pytest.raises(EndpointRefused):  # a name that resolves to loopback
            await EndpointPolicy(()).check("https://localhost/x")

    asyncio.run(check())
