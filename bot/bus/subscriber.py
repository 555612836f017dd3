"""Follow a channel pattern on Redis and hand each valid message to a callback; bad ones are counted.

With `since`, first catch up from the pattern's stream (entries after that id), then follow pub/sub without
duplicates: the pattern is subscribed before the stream is read, so a message published meanwhile arrives on
both paths and the pub/sub copy is dropped by its message `id`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import redis.asyncio as aioredis

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message
from bot.bus.publisher import route_by_type
from bot.bus.signing import Verifier
from bot.messages import Message

CATCH_UP_PAGE = 500


@dataclass(slots=True)
class SubscriberStats:
    """What a subscriber received (`caught_up`: valid messages read from the stream; `duplicates`: dropped)."""

    received: int = 0
    valid: int = 0
    rejected: int = 0
    caught_up: int = 0
    duplicates: int = 0
    last_stream_id: str | None = None


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Read `stream` from after `since` (a stream id; `0` for the whole stream) before following pub/sub."""

    stream: str
    since: str = "0"
    channels: Channels = field(default_factory=Channels)


def _exclusive(since: str) -> str:
    return "(" + (since if "-" in since else f"{since}-0")


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
        self.seen: set[str] = set()

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


async def _catch_up(client: aioredis.Redis, pattern: str, catch_up: CatchUp, dispatch: _Dispatch) -> bool:
    """Deliver the stream's entries after `since` that belong to `pattern`; True if `count` was reached."""
    route = route_by_type(catch_up.channels)
    start = _exclusive(catch_up.since)
    while True:
        entries: list[tuple[Any, Any]] = (
            await client.xrange(catch_up.stream, min=start, max="+", count=CATCH_UP_PAGE) or []
        )
        if not entries:
            return False
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            dispatch.stats.last_stream_id = entry_id
            payload = fields.get(b"data") if isinstance(fields, dict) else None
            if not isinstance(payload, bytes):
                dispatch.stats.received += 1
                dispatch.stats.rejected += 1
                dispatch.on_reject(b"", DecodeError("invalid_entry", f"stream entry {entry_id!r} has no data field"))
                continue
            message = dispatch.decode(payload)
            if message is None:
                continue
            try:
                channel = route(message)[0]
            except ValueError:
                channel = None  # no channel to match (a decision without symbol): keep it
            if channel is not None and not fnmatchcase(channel, pattern):
                continue
            dispatch.seen.add(message.id)
            dispatch.stats.caught_up += 1
            if dispatch.deliver(payload, message):
                return True
        start = "(" + _text(entries[-1][0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
) -> SubscriberStats:
    """PSUBSCRIBE to `pattern` (after catching up from a stream if asked) until `count` valid messages arrived.

    With a `verifier`, unsigned and badly signed messages are rejected (`unsigned`, `bad_signature`) like bad ones.
    """
    stats = SubscriberStats()
    dispatch = _Dispatch(stats, on_message, on_reject, count, expected_type, verifier)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(pattern)
    if on_ready is not None:
        on_ready()
    try:
        if catch_up is not None and await _catch_up(client, pattern, catch_up, dispatch):
            return stats
        async for raw in pubsub.listen():
            if raw.get("type") != "pmessage":
                continue
            payload: bytes = raw["data"]
            message = dispatch.decode(payload)
            if message is None:
                continue
            if message.id in dispatch.seen:
                # Each id comes once over pub/sub: forget it, so the set only holds what may still come.
                dispatch.seen.discard(message.id)
                stats.duplicates += 1
                continue
            if dispatch.deliver(payload, message):
                break
    finally:
        await pubsub.punsubscribe(pattern)
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return stats
