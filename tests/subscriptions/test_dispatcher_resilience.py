"""The dispatcher loop survives what a scan raises and abandons a scan that never ends.

A dead or stuck dispatcher loop leaves every Subscription `requested` and every event
undelivered, without a word: both faults are injected into a real server's dispatcher (its
database untouched), and a Subscription created afterwards must still be activated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.subscriptions.conftest import create_active, fast_settings, topic_subscription, unique
from tests.subscriptions.receiver import Receiver


@pytest.fixture
def running(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(fast_settings(mongodb_uri, unique("fhir_dispatcher_"))) as server:
        yield server


def _dispatcher(server: RunningServer) -> Any:
    return server.server.config.app.state.services.subscriptions.dispatcher  # type: ignore[attr-defined]


def _fail_next_scan(dispatcher: Any, fault: str) -> list[str]:
    """Makes the dispatcher's next scan raise (`raise`) or hang (`hang`); answers a list that
    records each faulty scan."""
    original = dispatcher.scan
    seen: list[str] = []

    async def faulty() -> None:
        if not seen:
            seen.append(fault)
            if fault == "raise":
                raise RuntimeError("injected")
            await asyncio.sleep(3600)
        await original()

    dispatcher.scan = faulty
    return seen


@pytest.mark.parametrize("fault", ["raise", "hang"])
def test_a_subscription_is_activated_after_a_faulty_scan(running: RunningServer, fault: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = _dispatcher(running)
    seen = _fail_next_scan(dispatcher, fault)
    receiver = Receiver().start()
    try:
        with httpx.Client(base_url=running.settings.base_url, timeout=30) as api, \
                caplog.at_level(logging.WARNING, logger="subscriptions.dispatcher"):
            # The bound of a hung scan (5 s) plus activation fits create_active's 15 s.
            create_active(api, topic_subscription("task-status", receiver.url))
            assert seen == [fault]
            assert any("dispatcher scan" in r.getMessage() for r in caplog.records)
            ready = api.get(str(httpx.URL(running.settings.base_url).join("/health/ready")))
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["dispatcher"] == "pass"
    finally:
        receiver.stop()
