"""`stop_tasks`: a stop under a deadline ends at the deadline, whatever the stopped task does."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.tasks import stop_tasks


async def _until_cancelled() -> None:
    """Work that ends only when cancelled (no clock: an event nobody sets)."""
    await asyncio.Event().wait()


async def _stubborn(finished: list[str]) -> None:
    """A task that, cancelled, keeps working (as a flush to a dead database does)."""
    try:
        await _until_cancelled()
    except asyncio.CancelledError:
        await _until_cancelled()
    finished.append("stubborn")


def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    async def main() -> str:
        finished: list[str] = []
        task = asyncio.create_task(_stubborn(finished))
        await asyncio.sleep(0)
        try:
            async with asyncio.timeout(0.2):
                await stop_tasks([task])
        except TimeoutError:
            return "deadline"
        finally:
            task.cancel()
        return "went on past the deadline"

    assert asyncio.run(main()) == "deadline"


def test_inside_a_finally_of_a_cancellation_every_task_is_awaited() -> None:
    async def main() -> list[str]:
        ended: list[str] = []

        async def child(name: str) -> None:
            try:
                await _until_cancelled()
            finally:
                ended.append(name)

        async def parent() -> None:
            children = [asyncio.create_task(child(n)) for n in ("a", "b", "c")]
            try:
                await _until_cancelled()
            finally:
                await stop_tasks(children)
                ended.append("parent's clean-up")

        task = asyncio.create_task(parent())
        for _ in range(3):  # the parent and its children start
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ended

    assert asyncio.run(main()) == ["a", "b", "c", "parent's clean-up"]


def test_a_failed_task_is_not_an_error_unless_asked() -> None:
    async def failing() -> None:
        raise ValueError("boom")

    async def main(ignore: tuple[type[BaseException], ...]) -> None:
        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        await stop_tasks([task], ignore=ignore)

    asyncio.run(main((Exception,)))
    with pytest.raises(ValueError):
        asyncio.run(main(()))


def test_a_task_that_swallows_its_cancellation_is_asked_again() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def swallowing() -> None:
            try:
                await _until_cancelled()
            except asyncio.CancelledError:
                seen.append("first cancel swallowed")  # as a retry loop catching RuntimeError does
            await _until_cancelled()

        task = asyncio.create_task(swallowing())
        await asyncio.sleep(0)
        await stop_tasks([task])
        seen.append("stopped" if task.cancelled() else "still running")
        return seen

    assert asyncio.run(main()) == ["first cancel swallowed", "stopped"]


def test_a_task_that_never_ends_is_left_behind_after_the_patience() -> None:
    async def main() -> bool:
        released = asyncio.Event()

        async def immortal() -> None:
            while not released.is_set():
                try:
                    await _until_cancelled()
                except asyncio.CancelledError:
                    continue

        task = asyncio.create_task(immortal())
        await asyncio.sleep(0)
        await stop_tasks([task], patience=0.3)
        left = not task.done()
        released.set()
        task.cancel()
        await asyncio.wait([task])
        return left

    assert asyncio.run(main()) is True
