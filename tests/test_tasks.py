"""Stopping a task always ends, even when something inside it swallowed the first cancellation."""

from __future__ import annotations

import asyncio

from bot.tasks import TaskSet, cancel_and_wait


async def _swallows_one_cancellation(swallowed: list[bool]) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        swallowed.append(True)  # as Python 3.11's wait_for can do when cancellation and completion race
    await asyncio.Event().wait()  # and then it waits on, forever unless cancelled again


async def test_cancel_and_wait_ends_a_task_that_swallowed_a_cancellation() -> None:
    swallowed: list[bool] = []
    task = asyncio.get_running_loop().create_task(_swallows_one_cancellation(swallowed))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, retry_s=0.01), timeout=5.0)
    assert swallowed == [True]
    assert task.cancelled()


async def test_cancel_all_ends_every_task() -> None:
    tasks = TaskSet()
    swallowed: list[bool] = []
    tasks.spawn(_swallows_one_cancellation(swallowed), "stubborn")
    tasks.spawn(asyncio.Event().wait(), "plain")
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.cancel_all(), timeout=5.0)
    assert len(tasks) == 0 and swallowed == [True]
