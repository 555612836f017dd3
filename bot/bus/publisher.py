"""Publish messages on Redis: PUBLISH for live fan-out, XADD to a capped stream for catch-up."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.bus.signing import Signer
from bot.clock import Clock, SystemClock
from bot.messages import (
    BookMessage,
    Control,
    Decision,
    Fill,
    GasMessage,
    Message,
    PoolMessage,
    Signal,
)
from bot.queues import EMPTY, BoundedQueue
from bot.tasks import TaskSet, cancel_and_wait

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

MAX_BATCH = 256
"""Most queued messages sent in one pipeline."""
PROBE_INTERVAL_S = 0.1
"""While backing off after a Redis error, how often to ask whether Redis answers again."""

Route = tuple[str, str | None]
"""(pub/sub channel, stream or None) a message goes to."""


def route_by_type(channels: Channels) -> Callable[[Message], Route]:
    """The DESIGN.md route of every message type; ValueError for a Decision or Fill without `symbol`."""

    def route(message: Message) -> Route:
        if isinstance(message, Signal):
            return channels.signal(message.kind, message.symbol), channels.signal_stream()
        if isinstance(message, Decision):
            return channels.decision(_symbol_of(message)), channels.decision_stream()
        if isinstance(message, Fill):
            return channels.fill(_symbol_of(message)), channels.fill_stream()
        if isinstance(message, BookMessage):
            return channels.book(message.venue, message.symbol), None
        if isinstance(message, GasMessage):
            return channels.gas(message.chain), None
        if isinstance(message, PoolMessage):
            return channels.pool(message.chain, message.pool), None
        if isinstance(message, Control):
            return channels.control(message.role), None
        raise ValueError(f"no route for {type(message).__name__}")

    return route


def _symbol_of(message: Decision | Fill) -> str:
    if message.symbol is None:
        raise ValueError(f"{message.type} {message.id} has no symbol to name its channel")
    return message.symbol


async def publish_and_append(
    client: aioredis.Redis, channel: str, stream: str | None, payload: bytes, stream_maxlen: int
) -> None:
    """PUBLISH `payload` on `channel` and XADD it (field `data`) to `stream` capped near `stream_maxlen` (None:
    pub/sub only), in one round trip; RedisError as Redis raises it."""
    async with client.pipeline(transaction=False) as pipe:
        add_publish(pipe, channel, stream, payload, stream_maxlen)
        await pipe.execute()


def add_publish(pipe: Pipeline, channel: str, stream: str | None, payload: bytes, stream_maxlen: int) -> None:
    """Queue on `pipe` the PUBLISH of `payload` on `channel` and its XADD to `stream` (None: pub/sub only)."""
    pipe.publish(channel, payload)
    if stream is not None:
        pipe.xadd(stream, {"data": payload}, maxlen=stream_maxlen, approximate=True)


@dataclass(slots=True)
class PublisherStats:
    """What the publisher did."""

    published: int = 0
    batches: int = 0
    """Round trips the queued messages took (published ÷ batches: messages per write)."""
    redis_errors: int = 0
    unroutable: int = 0


class Publisher(Generic[M]):
    """A bounded queue in front of Redis; a writer task publishes each message once Redis takes it.

    `route(message)` names the channel and the stream (None: pub/sub only). A full queue drops the new
    message (counted, warned at a bounded rate) instead of blocking the producer; a Redis error keeps the
    message and retries with backoff, so nothing accepted is lost. A message `route` refuses (ValueError)
    is counted in `stats.unroutable` and not queued. With a `signer` every message is signed (`sig`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        route: Callable[[M], Route],
        stream_maxlen: int,
        queue_size: int,
        clock: Clock | None = None,
        name: str = "publisher",
        signer: Signer | None = None,
    ) -> None:
        self.stats = PublisherStats()
        self.name = name
        self._client = client
        self._route = route
        self._maxlen = stream_maxlen
        self._clock = clock or SystemClock()
        self._signer = signer
        self._queue: BoundedQueue[tuple[M, Route]] = BoundedQueue(name, queue_size, self._clock.monotonic)
        self._rng = random.Random()
        self._writer: asyncio.Task[None] | None = None
        self.tasks = TaskSet()

    def start(self) -> None:
        # Supervised: a writer that dies on a bug (a message that cannot be encoded) starts again on the next one.
        self._writer = self.tasks.supervise(self._write, self.name)

    def submit(self, message: M) -> bool:
        """Queue a message for publishing; False (and counted) if the queue is full or it has no route."""
        try:
            route = self._route(message)
        except ValueError as exc:
            self.stats.unroutable += 1
            log.warning("%s: dropped a message with no route (%s)", self.name, exc)
            return False
        return self._queue.offer((message, route))

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
            log.warning("%s: %d messages not flushed before shutdown", self.name, len(self._queue))
            await cancel_and_wait(self._writer)
        self._writer = None

    async def publish_with(
        self,
        message: M,
        also: Callable[[Pipeline], None],
        applied: Callable[[], Awaitable[bool]],
    ) -> bool:
        """Publish `message` now, in one MULTI/EXEC with the commands `also` adds (both or neither reach Redis);
        retry with backoff while Redis errors, first asking `applied()` whether a transaction whose reply was lost
        went through (so it is never applied twice). Counted in `stats` like queued messages; False (nothing
        written) for a message with no route."""
        try:
            channel, stream = self._route(message)
        except ValueError as exc:
            self.stats.unroutable += 1
            log.warning("%s: dropped a message with no route (%s)", self.name, exc)
            return False
        payload = encode(message, self._signer)
        attempt = 0
        while True:
            try:
                if attempt == 0 or not await applied():
                    async with self._client.pipeline(transaction=True) as pipe:
                        also(pipe)
                        add_publish(pipe, channel, stream, payload, self._maxlen)
                        await pipe.execute()
            except RedisError as exc:
                attempt = await self._back_off(exc, attempt)
                continue
            self.stats.published += 1
            return True

    async def _back_off(self, exc: RedisError, attempt: int) -> int:
        """Count a failed write and wait before the next attempt: 0.1 s doubling to 5 s (jittered). After a lost
        connection the wait ends as soon as Redis answers a PING again (probed every `PROBE_INTERVAL_S`), so a
        restarted Redis is written to at once rather than at the end of a long backoff; an error from a Redis
        that answers (out of memory, read-only) waits it out."""
        self.stats.redis_errors += 1
        delay = min(5.0, 0.1 * 2.0**attempt) * self._rng.uniform(0.5, 1.0)
        log.warning("%s: redis publish failed (%s); retrying within %.2f s", self.name, exc, delay)
        deadline = self._clock.monotonic() + delay
        probe = isinstance(exc, RedisConnectionError | RedisTimeoutError)
        while (left := deadline - self._clock.monotonic()) > 0.0:
            await self._clock.sleep(min(PROBE_INTERVAL_S, left) if probe else left)
            if probe and await self._redis_answers():
                break
        return attempt + 1

    async def _redis_answers(self) -> bool:
        try:
            await asyncio.wait_for(self._client.ping(), PROBE_INTERVAL_S)
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    async def _write(self) -> None:
        # Whatever queued up while the last write was in flight goes out in the next one: one round trip for a
        # burst instead of one per message, so a busy producer drains the queue faster than it fills it.
        while (item := await self._queue.get()) is not None:
            batch = [item]
            closing = False
            while len(batch) < MAX_BATCH and (more := self._queue.get_nowait()) is not EMPTY:
                if more is None:
                    closing = True
                    break
                batch.append(more)
            await self._publish_until_done(batch)
            if closing:
                return

    async def _publish_until_done(self, batch: list[tuple[M, Route]]) -> None:
        writes = [(encode(message, self._signer), route) for message, route in batch]
        attempt = 0
        while True:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for payload, (channel, stream) in writes:
                        add_publish(pipe, channel, stream, payload, self._maxlen)
                    await pipe.execute()
            except RedisError as exc:
                attempt = await self._back_off(exc, attempt)
                continue
            self.stats.published += len(writes)
            self.stats.batches += 1
            return


class SignalPublisher(Publisher[Signal]):
    """The signals role's publisher: each signal on `arb:signal:{kind}:{symbol}` and `arb:stream:signal`."""

    def __init__(
        self,
        client: aioredis.Redis,
        channels: Channels,
        stream_maxlen: int,
        queue_size: int,
        clock: Clock | None = None,
        signer: Signer | None = None,
    ) -> None:
        super().__init__(
            client, route_by_type(channels), stream_maxlen, queue_size, clock, name="publisher", signer=signer
        )
