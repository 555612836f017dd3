"""The drills' in-process system: a private Redis, the simulated venue servers, the signals role and, on request,
the risk and paper roles (which talk to it only through Redis, as `arbbot demo` hosts them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

from bot.bus.local_redis import LocalRedis
from bot.config import RootConfig
from bot.feeds.health import StreamState
from bot.messages import Signal
from bot.paper.service import PaperRole
from bot.risk.service import RiskService
from bot.signals_role import SignalsRole
from bot.venues.local import LocalVenues


@dataclass(slots=True)
class Stack:
    """What a drill drives and reads."""

    config: RootConfig
    client: aioredis.Redis
    redis_url: str
    venues: LocalVenues
    role: SignalsRole
    risk: RiskService | None = None
    paper: PaperRole | None = None

    def all_live(self, venue: str) -> bool:
        """Every stream of `venue` is live."""
        return self.role.health.worst_state(venue) is StreamState.LIVE

    def every_venue_live(self) -> bool:
        """Every stream of every venue is live."""
        return all(self.all_live(name) for name in self.venues.servers)

    def trouble(self, venue: str) -> int:
        """Everything the feed counts when a venue misbehaves: faults seen, stale intervals, reconnects."""
        health = self.role.health.venue(venue)
        return sum(health.faults.values()) + health.stale_intervals + health.reconnects


async def wait_for(
    predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05
) -> bool:  # a condition with a deadline, never a bare sleep
    """Poll `predicate` until it holds (True) or `timeout_s` passes (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


@asynccontextmanager
async def local_stack(
    build_config: Callable[[str], RootConfig],
    downstream: bool = False,
    on_signal: Callable[[Signal], object] | None = None,
) -> AsyncIterator[Stack]:
    """Start Redis, the venues and the roles (risk and paper first, so they miss nothing); stop them all after."""
    redis = await LocalRedis.start()
    config = build_config(redis.url)
    client = aioredis.from_url(redis.url)
    venues = LocalVenues(config)
    risk: RiskService | None = None
    paper: PaperRole | None = None
    role: SignalsRole | None = None
    try:
        await venues.start()
        role = SignalsRole(
            config, client, {name: venues.endpoint(name) for name in venues.servers}, on_signal=on_signal
        )
        if downstream:
            risk = RiskService(config, client)
            await risk.start()
            paper = PaperRole(config, client)
            await paper.start()
        await role.start()
        yield Stack(config, client, redis.url, venues, role, risk, paper)
    finally:
        try:
            if role is not None:
                await role.stop()
        finally:
            if risk is not None:
                await risk.stop()
            if paper is not None:
                await paper.stop()
            await venues.stop()
            await client.aclose()
            await redis.stop()
