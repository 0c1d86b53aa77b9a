"""Notifications keep decimal precision: `12.50` reaches the receiver as `12.50`, in a
Backport full-resource notification and in an R4 rest-hook payload."""

from __future__ import annotations

import json

import httpx

from tests.subscriptions.builders import task
from tests.subscriptions.conftest import create_active, r4_subscription, topic_subscription, unique
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import numbers

INPUT = ',"input":[{"type":{"text":"dose"},"valueQuantity":{"value":12.50,"unit":"mg"}}]}'


def _post(api: httpx.Client, u: str) -> None:
    body = json.dumps(task(u), separators=(",", ":"))[:-1] + INPUT
    r = api.post("/Task", content=body, headers={"content-type": "application/fhir+json"})
    assert r.status_code == 201, r.text


def test_topic_notification_keeps_decimals(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    create_active(api, topic_subscription("task-status", receiver.url,
                                          filters=(f"Task?owner=Practitioner/{u}",)))
    _post(api, u)
    event = receiver.wait_for(lambda rs: len(numbers(rs)) >= 1)[-1]
    assert b'"value":12.50' in event.body.replace(b" ", b"")


def test_r4_payload_keeps_decimals(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    create_active(api, r4_subscription(f"Task?owner=Practitioner/{u}", receiver.url))
    _post(api, u)
    received = receiver.wait_for(lambda rs: any(r.body for r in rs))
    assert b'"value":12.50' in next(r.body for r in received if r.body).replace(b" ", b"")
