"""Durable timers on the real database: fired once, raced by two runners once, cancelled
never, taken over after a crashed runner's lease, and their effects single."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from fhir_server.context import RequestContext
from fhir_server.services import build_services
from tests.conftest import RunningServer
from tests.helpers import PATIENCE
from tests.workflows.toy import (
    NAME,
    ThankRequester,
    communications,
    completed_task,
    create_task,
    effect_values,
    fast_settings,
    unique,
    wait_for,
)
from workflows.durations import parse_duration
from workflows.timers import CANCELLED, DONE, Timer, TimerRunner, Timers, now, timer_indexes

Doc = dict[str, Any]


def with_timers(mongodb_uri: str, work: Callable[[Timers, Timers], Awaitable[None]],
                lease: timedelta = timedelta(seconds=30)) -> None:
    """Runs `work` with two Timers on one database through two clients (two processes)."""
    async def scenario() -> None:
        name = unique("fhir_timers_")
        one: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        two: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        try:
            for model in timer_indexes()["timers"]:
                await one[name]["timers"].create_indexes([model])
            await work(Timers(one[name], lease), Timers(two[name], lease))
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())


def counting(fired: Counter[str], event: asyncio.Event | None = None) -> Callable[[str], Callable[[Timer], Awaitable[None]]]:
    async def handler(timer: Timer) -> None:
        fired[timer.key] += 1
        if event is not None:
            event.set()

    return lambda workflow: handler


def test_a_timer_fires_once_when_due(mongodb_uri: str) -> None:
    async def work(timers: Timers, _: Timers) -> None:
        fired: Counter[str] = Counter()
        due = now() + parse_duration("PT1S")
        assert await timers.schedule("toy/Task/1/reminder", due, {"n": 1})
        assert not await timers.schedule("toy/Task/1/reminder", due + timedelta(hours=1))  # the same key
        went_off = asyncio.Event()
        fired_at: list[Any] = []

        async def handler(timer: Timer) -> None:
            fired_at.append(now())
            await counting(fired, went_off)(timer.workflow)(timer)

        runner = TimerRunner(timers, lambda workflow: handler, poll=0.05)
        runner.start()
        try:
            await asyncio.sleep(0.5)
            # Not before it is due: checked by the clock, not by how long the set-up took (on
            # a loaded machine the second above may have passed already).
            assert fired == Counter() or fired_at[0] >= due
            await asyncio.wait_for(went_off.wait(), 10 * PATIENCE)
        finally:
            await runner.stop()
        assert len(fired_at) == 1 and fired_at[0] >= due
        assert await runner.fire_due() == 0  # done: nothing left for another round to fire
        assert fired == Counter({"toy/Task/1/reminder": 1})
        doc = await timers.get("toy/Task/1/reminder")
        assert doc is not None and doc["status"] == DONE and doc["ended"] >= due
        assert await timers.collection.count_documents({}) == 1

    with_timers(mongodb_uri, work)


def test_a_stop_lets_the_timer_in_hand_finish(mongodb_uri: str) -> None:
    """A stop while a handler runs waits for it and for `done`: the timer is not left leased,
    to fire (and try its effects) again after the lease."""
    async def work(timers: Timers, _: Timers) -> None:
        fired: Counter[str] = Counter()
        in_handler, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def slow(timer: Timer) -> None:
            fired[timer.key] += 1
            in_handler.set()
            await release.wait()  # the handler's effects, under way when the stop comes
            finished.set()

        assert await timers.schedule("toy/Task/2/reminder", now(), {"n": 2})
        runner = TimerRunner(timers, lambda workflow: slow, poll=0.05)
        runner.start()
        await asyncio.wait_for(in_handler.wait(), 10 * PATIENCE)
        stopping = asyncio.create_task(runner.stop())
        await asyncio.sleep(0)  # the stop has begun: it waits for the handler
        assert not stopping.done()
        release.set()
        await asyncio.wait_for(stopping, 10 * PATIENCE)
        assert finished.is_set()
        doc = await timers.get("toy/Task/2/reminder")
        assert doc is not None and doc["status"] == DONE
        assert fired == Counter({"toy/Task/2/reminder": 1})

    with_timers(mongodb_uri, work)


def test_a_stop_cancels_a_handler_that_outlasts_its_patience(mongodb_uri: str) -> None:
    async def work(timers: Timers, _: Timers) -> None:
        in_handler = asyncio.Event()

        async def stuck(timer: Timer) -> None:
            in_handler.set()
            await asyncio.Event().wait()  # never set: a handler that does not end

        assert await timers.schedule("toy/Task/3/reminder", now())
        runner = TimerRunner(timers, lambda workflow: stuck, poll=0.05)
        runner.start()
        await asyncio.wait_for(in_handler.wait(), 10 * PATIENCE)
        started = time.monotonic()
        await runner.stop(patience=0.2)
        assert time.monotonic() - started < 10 * PATIENCE
        doc = await timers.get("toy/Task/3/reminder")
        assert doc is not None and doc["status"] != DONE  # kept: it fires again after its lease

    with_timers(mongodb_uri, work)


def test_two_racing_runners_fire_each_timer_once(mongodb_uri: str) -> None:
    async def work(one: Timers, two: Timers) -> None:
        fired: Counter[str] = Counter()
        keys = [f"toy/Task/{i}/reminder" for i in range(60)]
        for key in keys:
            await one.schedule(key, now())
        a, b = TimerRunner(one, counting(fired)), TimerRunner(two, counting(fired))
        counts = await asyncio.gather(a.fire_due(), b.fire_due(), a.fire_due(), b.fire_due())
        assert sum(counts) == len(keys)
        assert fired == Counter(dict.fromkeys(keys, 1))

    with_timers(mongodb_uri, work)


def test_a_cancelled_timer_never_fires(mongodb_uri: str) -> None:
    async def work(timers: Timers, _: Timers) -> None:
        fired: Counter[str] = Counter()
        await timers.schedule("toy/Task/2/reminder", now() + timedelta(milliseconds=300))
        assert await timers.cancel("toy/Task/2/reminder")
        runner = TimerRunner(timers, counting(fired), poll=0.05)
        runner.start()
        try:
            await asyncio.sleep(0.8)
        finally:
            await runner.stop()
        assert fired == Counter()
        doc = await timers.get("toy/Task/2/reminder")
        assert doc is not None and doc["status"] == CANCELLED
        assert not await timers.cancel("toy/Task/2/reminder")

    with_timers(mongodb_uri, work)


def test_a_crashed_runners_timer_fires_after_its_lease(mongodb_uri: str) -> None:
    async def work(crashed: Timers, survivor: Timers) -> None:
        fired: Counter[str] = Counter()
        await crashed.schedule("toy/Task/3/reminder", now())
        taken = await crashed.claim("a-runner-that-dies")  # claimed, never marked done
        assert taken is not None
        runner = TimerRunner(survivor, counting(fired))
        assert await runner.fire_due() == 0  # the lease still holds
        await asyncio.sleep(1.2)
        assert await runner.fire_due() == 1
        assert fired == Counter({"toy/Task/3/reminder": 1})
        assert not await crashed.done("toy/Task/3/reminder", "a-runner-that-dies")  # too late
        doc = await survivor.get("toy/Task/3/reminder")
        assert doc is not None and doc["status"] == DONE and doc["attempts"] == 2

    with_timers(mongodb_uri, work, lease=timedelta(seconds=1))


def test_a_timers_effect_is_single_after_a_crash_between_effect_and_done(mongodb_uri: str) -> None:
    """The workflow's timer fires, writes its effect, and the process dies before `done`; the
    next process fires it again after the lease: still one effect."""
    settings = fast_settings(mongodb_uri, unique("fhir_wf_timer_"), timer_lease=1.0)

    async def scenario() -> None:
        services = await build_services(settings, workflows=[ThankRequester()])
        try:
            engine = services.workflows
            assert engine is not None
            context = RequestContext.system(settings.base_url)
            task = (await services.repository.create(context, completed_task(unique()))).stored
            effects = engine.effects(NAME, f"{task.resource_type}/{task.id}/_history/1")
            key = await effects.schedule(f"Task/{task.id}/reminder", timedelta(0), {"task": f"Task/{task.id}"})
            doc = await engine.timers.claim("dying-process")
            assert doc is not None and doc["_id"] == key
            fire = engine._timer_handler(NAME)
            assert fire is not None
            await fire(Timer.of(doc))  # the effect is written; the process dies before `done`
            assert await engine.runner.fire_due() == 0
            await asyncio.sleep(1.2)
            assert await engine.runner.fire_due() == 1  # another process takes it over
            query = services.search.parse("Communication", [("based-on", f"Task/{task.id}")])
            page = await services.repository.search(context, query)
            reminders = [e.resource for e in page.entries]
            assert effect_values(reminders) == [f"{NAME}/timer/{key}/1"]
            assert (await engine.timers.get(key) or {})["status"] == DONE
        finally:
            await services.close()

    asyncio.run(scenario())


def test_a_workflow_timer_scheduled_by_an_event_fires_once_over_http(mongodb_uri: str) -> None:
    settings = fast_settings(mongodb_uri, unique("fhir_wf_timer_"))
    workflow = ThankRequester(remind_after=parse_duration("PT1S"))
    with RunningServer(settings, workflows=[workflow]), httpx.Client(base_url=settings.base_url, timeout=30) as api:
        task_id = create_task(api)
        wait_for(lambda: workflow.timer_calls >= 1)
        wait_for(lambda: len(communications(api, task_id)) == 2)
        time.sleep(1.0)  # a second firing would have come by now
        values = sorted(effect_values(communications(api, task_id)))
        key = f"{NAME}/Task/{task_id}/reminder"
        assert values == [f"{NAME}/Task/{task_id}/_history/1/1", f"{NAME}/timer/{key}/1"]
        assert workflow.timer_calls == 1
