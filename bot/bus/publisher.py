"""Publish messages on Redis: PUBLISH for live fan-out, XADD to a capped stream for catch-up."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.clock import Clock, SystemClock
from bot.messages import Signal
from bot.queues import BoundedQueue

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublisherStats:
    """What the publisher did."""

    published: int = 0
    redis_errors: int = 0


class SignalPublisher:
    """A bounded queue in front of Redis; a writer task publishes each signal once Redis takes it.

    A full queue drops the new signal (counted, warned at a bounded rate) instead of blocking the
    market pipeline; a Redis error keeps the signal and retries with backoff, so nothing accepted is lost.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        channels: Channels,
        stream_maxlen: int,
        queue_size: int,
        clock: Clock | None = None,
    ) -> None:
        self.stats = PublisherStats()
        self._client = client
        self._channels = channels
        self._maxlen = stream_maxlen
        self._clock = clock or SystemClock()
        self._queue: BoundedQueue[Signal] = BoundedQueue("publisher", queue_size, self._clock.monotonic)
        self._rng = random.Random()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write(), name="publisher:signals")

    def submit(self, signal: Signal) -> bool:
        """Queue a signal for publishing; False (and counted) if the queue is full."""
        return self._queue.offer(signal)

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (within `timeout_s`), then stop the writer."""
        if self._writer is None:
            return
        await self._queue.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout_s)
        except TimeoutError:
            log.warning("publisher: %d signals not flushed before shutdown", len(self._queue))
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None

    async def _write(self) -> None:
        while (signal := await self._queue.get()) is not None:
            await self._publish_until_done(signal)

    async def _publish_until_done(self, signal: Signal) -> None:
        payload = encode(signal)
        attempt = 0
        while True:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.publish(self._channels.signal(signal.kind, signal.symbol), payload)
                    pipe.xadd(self._channels.signal_stream(), {"data": payload}, maxlen=self._maxlen, approximate=True)
                    await pipe.execute()
            except RedisError as exc:
                self.stats.redis_errors += 1
                delay = min(5.0, 0.1 * 2.0**attempt) * self._rng.uniform(0.5, 1.0)
                attempt += 1
                log.warning("redis publish failed (%s); retrying in %.2f s", exc, delay)
                await self._clock.sleep(delay)
                continue
            self.stats.published += 1
            return
