"""Reading a Redis stream after a known entry, whichever protocol version (RESP2 or RESP3) the client speaks."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

StreamEntry = tuple[str, dict[bytes, bytes]]
"""(entry id, fields) as read from a stream."""


def as_text(value: bytes | str) -> str:
    """A value from a Redis reply (an entry id, a hash field) as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else value


async def read_after(
    client: aioredis.Redis, stream: str, last_id: str, block_ms: int | None, count: int = 100
) -> list[StreamEntry]:
    """Up to `count` entries of `stream` after `last_id` (XREAD), waiting up to `block_ms` for one (None: no wait)."""
    reply: Any = await client.xread({stream: last_id}, count=count, block=block_ms)
    if not reply:
        return []
    batches = reply.values() if isinstance(reply, dict) else (item[1] for item in reply)
    return [(as_text(raw_id), fields) for entries in batches for raw_id, fields in entries]
