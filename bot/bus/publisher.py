"""Publish messages on Redis: PUBLISH for live fan-out, XADD to a capped stream for catch-up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.bus.redis_pipe import RedisPipe, pack
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
from bot.queues import WARN_INTERVAL_S
from bot.tasks import TaskSet, cancel_and_wait

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

MAX_BATCH = 256
"""Most held messages the writer task sends in one write."""
HIGH_WATER_BYTES = 1 << 20
"""A connection with this much unsent in its socket buffer takes no more writes until the buffer drains."""
REPLY_TIMEOUT_S = 10.0
"""A connection that has not confirmed a write for this long is given up (and its messages sent again)."""
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
    """Writes Redis confirmed (published ÷ batches: messages per write)."""
    redis_errors: int = 0
    unroutable: int = 0
    unencodable: int = 0
    """Messages that could not be serialised (a bug): logged, not queued."""


@dataclass(slots=True)
class _Batch:
    """Messages written together on the current pipe, and how many of their replies are still to come."""

    messages: int
    replies: int
    sent_at: float


class Publisher(Generic[M]):
    """Publish messages in the order given; each leaves the process the moment it is submitted when Redis is up.

    `route(message)` names the channel and the stream (None: pub/sub only). A submitted message is encoded (and
    signed, with a `signer`) at once and held until Redis confirms it: written on the spot through a `RedisPipe`
    when everything before it is already on the wire (unless `write_now` is False), else by the writer task, which
    also (re)connects and writes whatever accumulated meanwhile in one write. At most
    `queue_size` messages are held: beyond that a new one is dropped (counted, warned at a bounded rate) instead of
    blocking the producer. A lost connection or an error reply sends every unconfirmed message again, in order,
    after a backoff, so nothing accepted is lost (a message whose reply was lost may arrive twice: subscribers
    drop duplicates by `id`). A message `route` refuses (ValueError) is counted in `stats.unroutable`.
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
        write_now: bool = True,
    ) -> None:
        """`write_now=False` leaves every write to the writer task: a little later, but one write (one system call)
        for a burst, for messages no one waits on (book snapshots)."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.stats = PublisherStats()
        self.name = name
        self._client = client
        self._route = route
        self._maxlen = stream_maxlen
        self._capacity = queue_size
        self._clock = clock or SystemClock()
        self._signer = signer
        self._write_now = write_now
        self._rng = random.Random()
        self._held: deque[tuple[bytes, Route]] = deque()
        self._on_wire = 0  # how many held messages, from the oldest, the current pipe has taken
        self._batches: deque[_Batch] = deque()
        self._pipe: RedisPipe | None = None
        self._pipe_error: RedisError | None = None  # what ended the last pipe, for the backoff
        self._attempt = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._dropped = 0
        self._last_warning = float("-inf")
        self._writer: asyncio.Task[None] | None = None
        self.tasks = TaskSet()

    def start(self) -> None:
        # Supervised: a writer that dies on a bug starts again, and finds the held messages where they were.
        self._writer = self.tasks.supervise(self._write, self.name)

    def submit(self, message: M) -> bool:
        """Accept a message for publishing; False (and counted) if too many are held or it has no route."""
        try:
            route = self._route(message)
        except ValueError as exc:
            self.stats.unroutable += 1
            log.warning("%s: dropped a message with no route (%s)", self.name, exc)
            return False
        if len(self._held) >= self._capacity:
            self._drop()
            return False
        try:
            payload = encode(message, self._signer)
        except Exception:
            self.stats.unencodable += 1
            log.exception("%s: dropped a message that cannot be encoded", self.name)
            return False
        self._held.append((payload, route))
        pipe = self._pipe
        if (
            self._write_now
            and pipe is not None
            and self._on_wire == len(self._held) - 1
            and pipe.buffered_bytes < HIGH_WATER_BYTES
        ):
            self._send(pipe, 1)
        else:
            self._wake.set()
        return True

    def _drop(self) -> None:
        self._dropped += 1
        now = self._clock.monotonic()
        if now - self._last_warning >= WARN_INTERVAL_S:
            self._last_warning = now
            log.warning("%s queue full: %d items dropped so far", self.name, self._dropped)

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> int:
        """Messages accepted and not yet confirmed by Redis."""
        return len(self._held)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is held (within `timeout_s`), then stop the writer and close the connection."""
        if self._writer is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout_s)
        except TimeoutError:
            log.warning("%s: %d messages not flushed before shutdown", self.name, len(self._held))
            await cancel_and_wait(self._writer)
        self._writer = None
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            await pipe.close()

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
        # Connects while messages are held and no pipe is up, writes what the submit calls could not (held back
        # by a full socket buffer, or accepted while Redis was down), and gives up on a pipe whose replies stall.
        while True:
            self._wake.clear()
            if self._closing and not self._held:
                return
            pipe = self._pipe
            if pipe is None:
                if self._held:
                    await self._connect()
                    continue
            elif self._on_wire < len(self._held):
                if pipe.buffered_bytes >= HIGH_WATER_BYTES:
                    await self._drain(pipe)
                elif self._pipe is pipe:
                    self._send(pipe, min(MAX_BATCH, len(self._held) - self._on_wire))
                continue
            await self._wait_for_work()

    async def _connect(self) -> None:
        error, self._pipe_error = self._pipe_error, None
        if error is not None:  # the last pipe ended in an error: wait before the next one
            self._attempt = await self._back_off(error, self._attempt)
        try:
            pipe = await RedisPipe.open(self._client, self._on_reply, self._on_lost)
        except RedisError as exc:
            self._pipe_error = exc
            return
        self._pipe, self._on_wire = pipe, 0
        self._batches.clear()

    async def _drain(self, pipe: RedisPipe) -> None:
        try:
            await pipe.drain()
        except RedisError as exc:
            if self._pipe is pipe:
                self._give_up(pipe, exc)

    async def _wait_for_work(self) -> None:
        """Wait until woken; while replies are due, at most until the oldest is REPLY_TIMEOUT_S late."""
        if not self._batches or self._pipe is None:
            await self._wake.wait()
            return
        left = self._batches[0].sent_at + REPLY_TIMEOUT_S - self._clock.monotonic()
        if left > 0.0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wake.wait()
            return
        self._give_up(self._pipe, RedisTimeoutError(f"no reply from Redis for {REPLY_TIMEOUT_S:.0f} s"))

    def _send(self, pipe: RedisPipe, count: int) -> None:
        """Write the next `count` held messages that are not on the wire yet, in one write."""
        parts: list[bytes] = []
        replies = 0
        for payload, (channel, stream) in itertools.islice(self._held, self._on_wire, self._on_wire + count):
            parts.append(pack(b"PUBLISH", channel, payload))
            replies += 1
            if stream is not None:
                parts.append(pack(b"XADD", stream, b"MAXLEN", b"~", self._maxlen, b"*", b"data", payload))
                replies += 1
        pipe.write(b"".join(parts))
        self._on_wire += count
        self._batches.append(_Batch(count, replies, self._clock.monotonic()))

    def _on_reply(self, reply: Any) -> None:
        pipe = self._pipe
        if pipe is None:
            return
        if isinstance(reply, RedisError):
            # Redis refused a command (out of memory, a read-only replica, …): send everything unconfirmed again.
            self._give_up(pipe, reply)
            return
        batch = self._batches[0]
        batch.replies -= 1
        if batch.replies:
            return
        self._batches.popleft()
        for _ in range(batch.messages):
            self._held.popleft()
        self._on_wire -= batch.messages
        self.stats.published += batch.messages
        self.stats.batches += 1
        self._attempt = 0
        if self._closing and not self._held:
            self._wake.set()

    def _on_lost(self, error: BaseException) -> None:
        self._forget_pipe(error if isinstance(error, RedisError) else RedisConnectionError(str(error)))

    def _give_up(self, pipe: RedisPipe, error: RedisError) -> None:
        pipe.abort()
        self._forget_pipe(error)

    def _forget_pipe(self, error: RedisError) -> None:
        """The current pipe is gone: every held message is to be written again, after a backoff."""
        self._pipe, self._pipe_error = None, error
        self._on_wire = 0
        self._batches.clear()
        self._wake.set()


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
