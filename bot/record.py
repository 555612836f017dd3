"""`arbbot record`: write live feed events (books at the configured depth, trades) to a recording."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bot.clock import SystemClock
from bot.config import RootConfig
from bot.events import MarketEvent, TradeEvent
from bot.feeds.health import FeedHealth
from bot.recording import RecordingWriter
from bot.rejections import RejectionCounter
from bot.signals_role import build_feeds
from bot.venues.local import LocalVenues


@dataclass(slots=True)
class RecordSummary:
    """What a recording run wrote."""

    books: int = 0
    trades: int = 0
    rejected: int = 0
    reconnects: int = 0


async def record(config: RootConfig, duration_s: float, out: Path) -> RecordSummary:
    """Record every configured venue for `duration_s`, starting the local simulated venues if the config has any."""
    summary = RecordSummary()
    health = FeedHealth()
    rejections = RejectionCounter()
    venues = LocalVenues(config) if any(v.simulated for v in config.venues.values()) else None
    with RecordingWriter(out) as writer:

        def sink(event: MarketEvent) -> None:
            writer.write(event)
            if isinstance(event, TradeEvent):
                summary.trades += 1
            else:
                summary.books += 1

        feeds = []
        try:
            if venues is not None:
                await venues.start()
            endpoints = {name: venues.endpoint(name) for name in venues.servers} if venues else {}
            feeds = build_feeds(config, sink, health, rejections, SystemClock(), endpoints)
            for feed in feeds:
                feed.start()
            await asyncio.sleep(duration_s)
        finally:
            await asyncio.gather(*(feed.close() for feed in feeds))
            if venues is not None:
                await venues.stop()
    summary.rejected = rejections.total
    summary.reconnects = sum(v.reconnects for v in health.venues.values())
    return summary
