"""Follow a channel pattern on Redis and hand each valid message to a callback; bad ones are counted.

Without a catch-up, `follow` listens on pub/sub. With `catch_up` it reads the pattern's stream instead, from after
the `since` id: first what is there (counted as caught up), then each new entry as it is added (a blocking XREAD,
woken by the same write that publishes the message). Every message then has a stream id, so after a lost
connection `follow` waits for Redis and goes on after the last entry it read: nothing is lost or delivered twice,
unless the capped stream was trimmed past that entry meanwhile, which it counts (`trimmed`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message
from bot.bus.publisher import route_by_type
from bot.bus.signing import Verifier
from bot.bus.streams import as_text, read_after
from bot.messages import Message

CATCH_UP_PAGE = 500
READ_BLOCK_MS = 1_000
"""How long one blocking stream read waits for a new entry before it asks again."""
RECENT_IDS = 4_096
"""How many of the last message ids read a stream reader remembers, to drop an entry appended twice."""
RESUME_INITIAL_S = 0.05
RESUME_MAX_S = 2.0
"""After a lost connection, Redis is tried again after RESUME_INITIAL_S, doubling up to RESUME_MAX_S."""

_LOST = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


@dataclass(slots=True)
class SubscriberStats:
    """What a subscriber received.

    `caught_up`: valid messages read from the stream before reaching its end; `duplicates`: entries whose message
    was read moments before (a publisher's retry appends one twice), dropped; `last_stream_id`: the last entry
    read; `resumes`: connections lost and taken up again after the last entry read; `trimmed`: resumes that found
    the capped stream trimmed past that entry (the messages right after it may be lost to this reader)."""

    received: int = 0
    valid: int = 0
    rejected: int = 0
    caught_up: int = 0
    duplicates: int = 0
    last_stream_id: str | None = None
    resumes: int = 0
    trimmed: int = 0


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Read `stream` from after `since` (a stream id; `0` for the whole stream), then follow it."""

    stream: str
    since: str = "0"
    channels: Channels = field(default_factory=Channels)


def _full_id(since: str) -> str:
    return since if "-" in since else f"{since}-0"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class _Dispatch:
    def __init__(
        self,
        stats: SubscriberStats,
        on_message: Callable[[bytes, Message], None],
        on_reject: Callable[[bytes, DecodeError], None],
        count: int | None,
        expected_type: str | None,
        verifier: Verifier | None,
    ) -> None:
        self.stats = stats
        self.on_message = on_message
        self.on_reject = on_reject
        self.count = count
        self.expected_type = expected_type
        self.verifier = verifier

    def decode(self, payload: bytes) -> Message | None:
        self.stats.received += 1
        try:
            return decode_message(payload, self.expected_type, self.verifier)
        except DecodeError as exc:
            self.stats.rejected += 1
            self.on_reject(payload, exc)
            return None

    def deliver(self, payload: bytes, message: Message) -> bool:
        """Hand over one valid message; True once `count` is reached."""
        self.stats.valid += 1
        self.on_message(payload, message)
        return self.count is not None and self.stats.valid >= self.count


class _StreamReader:
    """Deliver the entries of a stream that belong to a pattern, in order, each once, remembering the last id."""

    def __init__(self, client: aioredis.Redis, pattern: str, catch_up: CatchUp, dispatch: _Dispatch) -> None:
        self.client = client
        self.pattern = pattern
        self.stream = catch_up.stream
        self.route = route_by_type(catch_up.channels)
        self.dispatch = dispatch
        self.last_id = _full_id(catch_up.since)
        self.recent: deque[str] = deque(maxlen=RECENT_IDS)
        self.recent_set: set[str] = set()

    async def catch_up(self) -> bool:
        """Deliver what the stream holds after the last id; True if `count` was reached."""
        while True:
            entries: list[tuple[Any, Any]] = (
                await self.client.xrange(self.stream, min="(" + self.last_id, max="+", count=CATCH_UP_PAGE) or []
            )
            if not entries:
                return False
            for raw_id, fields in entries:
                if self._deliver(as_text(raw_id), fields, caught_up=True):
                    return True

    async def read_new(self) -> bool:
        """Deliver new entries as they are added; True once `count` is reached (else it runs until cancelled)."""
        while True:
            for entry_id, fields in await read_after(self.client, self.stream, self.last_id, READ_BLOCK_MS):
                if self._deliver(entry_id, fields, caught_up=False):
                    return True

    async def was_trimmed(self) -> bool:
        """True if the capped stream was trimmed past the last entry read: the entries right after it may have
        gone unread. (Trimming takes the oldest entries first, so while that entry is there, all after it are.)"""
        if self.dispatch.stats.last_stream_id is None:
            return False  # nothing read yet: `since` need not be an entry
        if await self.client.xrange(self.stream, min=self.last_id, max=self.last_id, count=1):
            return False
        first: list[tuple[Any, Any]] = await self.client.xrange(self.stream, min="-", max="+", count=1) or []
        return bool(first) and _id_key(as_text(first[0][0])) > _id_key(self.last_id)

    def _deliver(self, entry_id: str, fields: Any, caught_up: bool) -> bool:
        dispatch = self.dispatch
        self.last_id = dispatch.stats.last_stream_id = entry_id
        payload = fields.get(b"data") if isinstance(fields, dict) else None
        if not isinstance(payload, bytes):
            dispatch.stats.received += 1
            dispatch.stats.rejected += 1
            dispatch.on_reject(b"", DecodeError("invalid_entry", f"stream entry {entry_id!r} has no data field"))
            return False
        message = dispatch.decode(payload)
        if message is None:
            return False
        try:
            channel = self.route(message)[0]
        except ValueError:
            channel = None  # no channel to match (a decision without symbol): keep it
        if channel is not None and not fnmatchcase(channel, self.pattern):
            return False
        if message.id in self.recent_set:
            dispatch.stats.duplicates += 1
            return False
        if len(self.recent) == RECENT_IDS:
            self.recent_set.discard(self.recent[0])
        self.recent.append(message.id)
        self.recent_set.add(message.id)
        if caught_up:
            dispatch.stats.caught_up += 1
        return dispatch.deliver(payload, message)


async def follow(
    client: aioredis.Redis,
    pattern: str,
    on_message: Callable[[bytes, Message], None],
    on_reject: Callable[[bytes, DecodeError], None],
    count: int | None = None,
    expected_type: str | None = None,
    on_ready: Callable[[], None] | None = None,
    catch_up: CatchUp | None = None,
    verifier: Verifier | None = None,
    on_lost: Callable[[BaseException | None], None] | None = None,
    stats: SubscriberStats | None = None,
) -> SubscriberStats:
    """Deliver the valid messages of the channels matching `pattern` until `count` arrived (else until cancelled).

    Without `catch_up`: PSUBSCRIBE, `on_ready` once subscribed; a lost connection raises. With `catch_up`: read
    the stream (see the module doc), `on_ready` once Redis answered; a lost connection raises before that and is
    waited out after it: `on_lost(error)` when it is lost, `on_lost(None)` when reading goes on.
    With a `verifier`, unsigned and badly signed messages are rejected (`unsigned`, `bad_signature`) like bad ones.
    Counts go to `stats` (a new one if not given), which is returned.
    """
    stats = SubscriberStats() if stats is None else stats
    dispatch = _Dispatch(stats, on_message, on_reject, count, expected_type, verifier)
    if catch_up is not None:
        await _follow_stream(_StreamReader(client, pattern, catch_up, dispatch), on_ready, on_lost)
        return stats
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(pattern)
    if on_ready is not None:
        on_ready()
    try:
        async for raw in pubsub.listen():
            if raw.get("type") != "pmessage":
                continue
            payload: bytes = raw["data"]
            message = dispatch.decode(payload)
            if message is not None and dispatch.deliver(payload, message):
                break
    finally:
        await pubsub.punsubscribe(pattern)
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return stats


async def _follow_stream(
    reader: _StreamReader,
    on_ready: Callable[[], None] | None,
    on_lost: Callable[[BaseException | None], None] | None,
) -> None:
    await reader.client.ping()  # an error before Redis first answered is the caller's (wrong URL, password, TLS)
    if on_ready is not None:
        on_ready()
    stats = reader.dispatch.stats
    delay = RESUME_INITIAL_S
    lost = False
    while True:
        try:
            if lost:
                stats.trimmed += await reader.was_trimmed()
                stats.resumes += 1
                lost, delay = False, RESUME_INITIAL_S
                if on_lost is not None:
                    on_lost(None)
            if await reader.catch_up() or await reader.read_new():
                return
        except _LOST as exc:
            if not lost and on_lost is not None:
                on_lost(exc)
            lost = True
            await asyncio.sleep(delay)
            delay = min(2.0 * delay, RESUME_MAX_S)
