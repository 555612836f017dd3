"""The one helper that starts background tasks: named, strongly referenced, and loud when they die."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

RESTART_INITIAL_S = 0.2
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0
"""A supervised task that ran this long before dying starts again from the shortest delay."""


class TaskSet:
    """Own a set of named background tasks; log any that dies with an exception.

    `spawn` runs a coroutine once; `supervise` runs a factory's coroutine and, when it dies with an exception,
    starts a new one after an exponential backoff with jitter (RESTART_INITIAL_S doubling up to RESTART_MAX_S),
    counting restarts per name; one that returns has finished its work and is not started again. Cancelling
    (`cancel_all`) stops both for good.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failures = 0
        self.restarts: Counter[str] = Counter()
        self.deaths: Counter[str] = Counter()
        self._rng = random.Random()

    def supervise(self, factory: Callable[[], Coroutine[Any, Any, Any]], name: str) -> asyncio.Task[Any]:
        """Run `factory()` as a task called `name`, restarting it with backoff whenever it dies."""
        return self.spawn(self._keep_running(factory, name), name)

    async def _keep_running(self, factory: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started = loop.time()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                self.failures += 1
                self.deaths[name] += 1
                log.error("task %s died: %r", name, exc, exc_info=exc)
            if loop.time() - started >= HEALTHY_AFTER_S:
                attempt = 0
            delay = min(RESTART_MAX_S, RESTART_INITIAL_S * 2.0**attempt) * self._rng.uniform(0.5, 1.0)
            attempt += 1
            log.warning("restarting task %s in %.2f s (restart %d)", name, delay, self.restarts[name] + 1)
            await asyncio.sleep(delay)
            self.restarts[name] += 1

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
            self.deaths[task.get_name()] += 1
            log.error("task %s died: %r", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        """The names of the tasks running now."""
        return sorted(task.get_name() for task in self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task and wait for them to finish."""
        await asyncio.gather(*(cancel_and_wait(task) for task in list(self._tasks)))


def being_cancelled() -> bool:
    """True while a cancellation of the current task is pending, even one a library turned into another error."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


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
