"""The bounded queue between pipeline stages: never blocks the producer, counts what it drops."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Empty(enum.Enum):
    """The type of `EMPTY`: what `get_nowait` returns from an empty queue."""

    EMPTY = enum.auto()


EMPTY = Empty.EMPTY

WARN_INTERVAL_S = 5.0


class BoundedQueue(Generic[T]):
    """A bounded FIFO for one stage; `offer` drops (counted, warned at a bounded rate) when full.

    `close()` queues an end marker: `get()` returns None once everything before it was taken.
    """

    def __init__(self, name: str, size: int, clock: Callable[[], float]) -> None:
        self.name = name
        self.dropped = 0
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(size)
        self._clock = clock
        self._last_warning = float("-inf")

    def offer(self, item: T) -> bool:
        """Queue `item`; False when the queue is full and the item was dropped."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            now = self._clock()
            if now - self._last_warning >= WARN_INTERVAL_S:
                self._last_warning = now
                log.warning("%s queue full: %d items dropped so far", self.name, self.dropped)
            return False
        return True

    async def get(self) -> T | None:
        """The next item, or None after `close()`."""
        return await self._queue.get()

    def get_nowait(self) -> T | Empty | None:
        """The next item without waiting: `EMPTY` when there is none, None after `close()`."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return EMPTY

    async def close(self) -> None:
        """Queue the end marker (waits for room: nothing already accepted is skipped)."""
        await self._queue.put(None)

    def __len__(self) -> int:
        return self._queue.qsize()
