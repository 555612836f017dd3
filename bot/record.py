"""`arbbot record`: write live feed events (books at the configured depth, trades) to a recording."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bot.chain.configured import ConfiguredChain, start_local_chain
from bot.clock import SystemClock
from bot.config import RootConfig
from bot.events import BookEvent, MarketEvent, TradeEvent
from bot.feeds.chain import ChainFeed
from bot.feeds.health import FeedHealth
from bot.recording import RecordingWriter
from bot.rejections import RejectionCounter
from bot.signals_role import build_feeds, chain_endpoint
from bot.venues.local import LocalVenues


@dataclass(slots=True)
class RecordSummary:
    """What a recording run wrote."""

    books: int = 0
    trades: int = 0
    chain_events: int = 0
    rejected: int = 0
    reconnects: int = 0


async def record(config: RootConfig, duration_s: float, out: Path) -> RecordSummary:
    """Record every configured venue for `duration_s`, starting the local simulated venues if the config has any."""
    summary = RecordSummary()
    health = FeedHealth()
    rejections = RejectionCounter()
    venues = LocalVenues(config) if any(v.simulated for v in config.venues.values()) else None
    local_chain: ConfiguredChain | None = None
    chain_feed: ChainFeed | None = None
    with RecordingWriter(out) as writer:

        def sink(event: MarketEvent) -> None:
            writer.write(event)
            if isinstance(event, TradeEvent):
                summary.trades += 1
            elif isinstance(event, BookEvent):
                summary.books += 1
            else:
                summary.chain_events += 1

        feeds = []
        try:
            if venues is not None:
                await venues.start()
            endpoints = {name: venues.endpoint(name) for name in venues.servers} if venues else {}
            feeds = build_feeds(config, sink, health, rejections, SystemClock(), endpoints)
            for feed in feeds:
                feed.start()
            chain = config.chain
            if chain is not None:
                if chain.local:
                    local_chain = await start_local_chain(config, venues.simulator if venues else None)
                endpoint = local_chain.endpoint if local_chain is not None else chain_endpoint(config)
                if endpoint is not None:
                    chain_feed = ChainFeed(
                        chain.name, endpoint.ws_url, endpoint.pools, sink, health, rejections,
                        tip_floor_gwei=chain.tip_floor_gwei, token_aliases=endpoint.token_aliases,
                    )  # fmt: skip
                    chain_feed.start()
            await asyncio.sleep(duration_s)
        finally:
            await asyncio.gather(*(feed.close() for feed in feeds))
            if chain_feed is not None:
                await chain_feed.close()
            if local_chain is not None:
                await local_chain.chain.stop()
            if venues is not None:
                await venues.stop()
    summary.rejected = rejections.total
    summary.reconnects = sum(v.reconnects for v in health.venues.values())
    return summary
