"""Readiness checks for `/readyz`: Redis answers, every configured feed is fresh."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.clock import Clock, SystemClock
from bot.feeds.health import FeedHealth, StreamState
from bot.observe.http import Check


def redis_ping(client: aioredis.Redis) -> Check:
    """Ready while Redis answers PING (the server bounds the wait with its check timeout)."""

    async def check() -> str | None:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            return f"PING failed: {str(exc) or type(exc).__name__}"
        return None

    return check


def feeds_fresh(health: FeedHealth, venues: Iterable[str], clock: Clock | None = None) -> Check:
    """Ready while every stream of every named venue (exchanges and chains alike) is live.

    A venue with no stream registered yet is not ready: it has not connected.
    """
    names = tuple(venues)
    clock = clock or SystemClock()

    async def check() -> str | None:
        now_ms = clock.now_ms()
        problems = []
        for venue in names:
            known = health.venues.get(venue)
            if known is None or not known.streams:
                problems.append(f"{venue}: no stream yet")
                continue
            state = health.worst_state(venue)
            if state is not StreamState.LIVE:
                problems.append(f"{venue}: {state.value} for {health.unhealthy_for(venue, now_ms) / 1000:.1f} s")
        return "; ".join(problems) or None

    return check
