"""Call a function at a steady rate in an event loop (book updates, raw Redis messages)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_LAG_S = 0.05
"""A pacer further behind its schedule than this forgets the backlog instead of sending it in one burst."""


@dataclass(slots=True)
class PaceStats:
    """What a paced run did."""

    calls: int = 0
    elapsed_s: float = 0.0
    dropped_backlog: int = 0
    """Calls skipped because the loop fell more than MAX_LAG_S behind (a busy machine)."""

    @property
    def rate_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def paced(
    rate_per_s: float,
    call: Callable[[], Awaitable[object] | None],
    stop: asyncio.Event,
    duration_s: float | None = None,
) -> PaceStats:
    """Call `call` `rate_per_s` times a second, evenly, until `stop` is set or `duration_s` has passed.

    A `call` that returns an awaitable is awaited before the next one.
    """
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    stats = PaceStats()
    start = time.perf_counter()
    due = 0  # calls the schedule has asked for so far, counting the dropped backlog
    while not stop.is_set():
        now = time.perf_counter()
        if duration_s is not None and now - start >= duration_s:
            break
        target = int((now - start) * rate_per_s) + 1
        if target - due > max(1, MAX_LAG_S * rate_per_s):
            stats.dropped_backlog += target - due - 1
            due = target - 1
        while due < target:
            result = call()
            if inspect.isawaitable(result):
                await result
            due += 1
            stats.calls += 1
        # A plain sleep (the stop flag is read on waking, at most one interval later): waiting on the event with a
        # timeout would make a task per wake-up.
        await asyncio.sleep(max(0.0, start + due / rate_per_s - time.perf_counter()))
    stats.elapsed_s = time.perf_counter() - start
    return stats
