"""The one helper that starts background tasks: named, strongly referenced, and loud when they die."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Own a set of named background tasks; log any that dies with an exception."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failures = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start `coro` as a task called `name` and keep it until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures += 1
            log.error("task %s died: %r", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task and wait for them to finish."""
        await asyncio.gather(*(cancel_and_wait(task) for task in list(self._tasks)))


async def cancel_and_wait(task: asyncio.Task[Any], retry_s: float = 0.5) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every `retry_s` while it runs on.

    One cancellation is not always enough: on Python 3.11 `asyncio.wait_for` (used inside libraries too) can
    swallow a cancellation that lands as its inner await completes, and the task then waits on. Repeating the
    request lands it at the task's next await, so stopping always ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r while being cancelled", task.get_name(), task.exception())
