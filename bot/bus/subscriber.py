"""Follow a channel pattern on Redis and hand each valid message to a callback; bad ones are counted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from bot.bus.codec import DecodeError, decode_message
from bot.messages import Message


@dataclass(slots=True)
class SubscriberStats:
    """What a subscriber received."""

    received: int = 0
    valid: int = 0
    rejected: int = 0


async def follow(
    client: aioredis.Redis,
    pattern: str,
    on_message: Callable[[bytes, Message], None],
    on_reject: Callable[[bytes, DecodeError], None],
    count: int | None = None,
    expected_type: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> SubscriberStats:
    """PSUBSCRIBE to `pattern` until `count` valid messages have arrived (forever if None)."""
    stats = SubscriberStats()
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(pattern)
    if on_ready is not None:
        on_ready()
    try:
        async for raw in pubsub.listen():
            if raw.get("type") != "pmessage":
                continue
            payload: bytes = raw["data"]
            stats.received += 1
            try:
                message = decode_message(payload, expected_type)
            except DecodeError as exc:
                stats.rejected += 1
                on_reject(payload, exc)
                continue
            stats.valid += 1
            on_message(payload, message)
            if count is not None and stats.valid >= count:
                break
    finally:
        await pubsub.punsubscribe(pattern)
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return stats
