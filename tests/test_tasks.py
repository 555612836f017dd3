"""Stopping a task always ends, even when something inside it swallowed the first cancellation."""

from __future__ import annotations

import asyncio

from helpers import eventually

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


async def test_a_supervised_task_that_dies_is_restarted_with_backoff_until_cancelled() -> None:
    tasks = TaskSet()
    runs: list[int] = []
    third_run = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"bug number {len(runs)}")
        third_run.set()
        await asyncio.Event().wait()

    tasks.supervise(flaky, "flaky")
    await asyncio.wait_for(third_run.wait(), timeout=10.0)
    assert runs == [0, 1, 2]
    assert tasks.deaths["flaky"] == 2 and tasks.restarts["flaky"] == 2 and tasks.failures == 2
    assert tasks.names() == ["flaky"]
    await asyncio.wait_for(tasks.cancel_all(), timeout=5.0)
    assert len(tasks) == 0 and runs == [0, 1, 2]


async def test_a_plain_task_that_dies_is_counted_and_not_restarted() -> None:
    tasks = TaskSet()

    async def broken() -> None:
        raise ValueError("once")

    tasks.spawn(broken(), "broken")
    await eventually(lambda: len(tasks) == 0, timeout=5.0)
    assert tasks.deaths["broken"] == 1 and tasks.restarts["broken"] == 0 and tasks.failures == 1


async def _turns_cancellation_into_an_error(runs: list[int]) -> None:
    runs.append(len(runs))
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise ConnectionError("socket closed") from None  # as a client library's close path can do


async def test_a_supervised_task_cancelled_into_an_error_is_not_counted_dead_or_restarted() -> None:
    tasks = TaskSet()
    runs: list[int] = []
    tasks.supervise(lambda: _turns_cancellation_into_an_error(runs), "client")
    await eventually(lambda: runs == [0], timeout=5.0)
    await asyncio.wait_for(tasks.cancel_all(), timeout=5.0)
    assert runs == [0]
    assert tasks.deaths["client"] == 0 and tasks.restarts["client"] == 0 and tasks.failures == 0
