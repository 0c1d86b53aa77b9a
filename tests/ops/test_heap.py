"""The served process sets the garbage collector for a long-running server (fhir_server/heap.py):
start-up objects frozen, rarer collections; FHIR_GC=default keeps CPython's defaults."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_server import heap, serving
from fhir_server.config import Settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _start_and_stop() -> None:
    server = serving.server(_app, Settings(), log_level="warning", access_log=False)
    sock = serving.listen("127.0.0.1", 0)

    async def run() -> None:
        server.config.load()  # as uvicorn's serve does before startup
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[sock])
        await server.shutdown(sockets=[sock])

    try:
        asyncio.run(run())
    finally:
        sock.close()


def test_a_started_server_freezes_its_start_up_heap_and_collects_less_often(
        restored_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FHIR_GC", raising=False)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    _start_and_stop()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == heap.THRESHOLDS


def test_fhir_gc_default_keeps_cpythons_collector(restored_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_GC", "default")
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    _start_and_stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 10, 10)
