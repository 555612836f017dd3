"""Contract: every venue protocol survives every server-side fault.

Two simulated venues speak one protocol; one of them gets the fault. While it lasts, no signal is built on
the faulty venue's book; after it heals, the real ccxt.pro client's book equals the server's again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import eventually

from bot.clock import SystemClock
from bot.config import RootConfig, parse_config
from bot.engine import SignalEngine
from bot.feeds.health import FeedHealth, StreamState
from bot.messages import Signal
from bot.rejections import RejectionCounter
from bot.signals_role import build_engine, build_feeds
from bot.venues.base import Fault
from bot.venues.local import LocalVenues

PROTOCOLS = ["okx", "bybit", "binance"]
SYMBOL = "BTC/USDT"
FAULTY, HEALTHY = "faulty", "healthy"


def _config(protocol: str) -> RootConfig:
    venue = {"exchange": protocol, "simulated": True, "taker_fee_bps": 0.5, "stale_after_ms": 400}
    return parse_config(
        {
            "symbols": [SYMBOL],
            "venues": {
                FAULTY: {**venue, "reconnect_after_ms": 1_500},
                HEALTHY: {**venue, "reconnect_after_ms": 1_500},
            },
            "feeds": {"backoff_initial_s": 0.05, "backoff_max_s": 0.3},
            "simulator": {
                "seed": 5,
                "tick_ms": 20,
                "symbols": {
                    SYMBOL: {"start_price": 97_000.0, "volatility_bps": 8.0, "tick_size": 0.1, "top_size": 0.5}
                },
                "venues": {FAULTY: {"lag_ms": 0}, HEALTHY: {"lag_ms": 300, "noise_bps": 2.0}},
            },
            "strategies": {"cex_cex": {"min_net_edge_bps": 0.0}},
        },
        "fault-test",
    )


@dataclass
class Rig:
    """Servers, feeds and engine for one protocol, recording what the engine signals."""

    config: RootConfig
    venues: LocalVenues
    health: FeedHealth
    engine: SignalEngine
    feeds: list[Any]
    signals: list[Signal] = field(default_factory=list)
    unusable_signals: list[Signal] = field(default_factory=list)

    def on_signal(self, signal: Signal) -> None:
        self.signals.append(signal)
        live = all(self.health.is_live(venue, signal.symbol) for venue in (signal.buy_venue, signal.sell_venue))
        if signal.status != "closed" and not live:
            self.unusable_signals.append(signal)

    def client_book_matches_server(self, venue: str) -> bool:
        feed = next(feed for feed in self.feeds if feed.venue == venue)
        book = feed._client.current_book(SYMBOL, depth=1_000)
        _, bids, asks = self.venues.servers[venue].book_state(SYMBOL)
        return book is not None and book.bids == bids and book.asks == asks


@pytest.fixture(params=PROTOCOLS)
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    config = _config(request.param)
    clock = SystemClock()
    health = FeedHealth()
    rejections = RejectionCounter()
    venues = LocalVenues(config)
    for server in venues.servers.values():
        server.stall_s = 1.0
    holder: list[Rig] = []
    engine = build_engine(config, lambda signal: holder[0].on_signal(signal), rejections, clock, health)
    await venues.start()
    endpoints = {name: venues.endpoint(name) for name in venues.servers}
    feeds = build_feeds(config, engine.submit, health, rejections, clock, endpoints)
    rig = Rig(config, venues, health, engine, feeds)
    holder.append(rig)
    engine_task = asyncio.create_task(engine.run())
    for feed in feeds:
        feed.start()
    try:
        await eventually(lambda: health.worst_state(FAULTY) is StreamState.LIVE, timeout=20, message="never live")
        yield rig
    finally:
        await asyncio.gather(*(feed.close() for feed in feeds))
        await engine.stop()
        await engine_task
        await venues.stop()


async def _heal_and_converge(rig: Rig, fault: Fault) -> None:
    health = rig.health
    faults_before = sum(health.venue(FAULTY).faults.values()) + health.venue(FAULTY).stale_intervals
    rig.venues.servers[FAULTY].inject(fault)
    if fault is Fault.SNAPSHOT_FAIL:
        rig.venues.servers[FAULTY].inject(Fault.DROP)  # the failure bites on the resubscription a drop forces
    harmless = fault is Fault.DUPLICATE and rig.config.venues[FAULTY].exchange == "binance"
    if not harmless:  # Binance's sync rule drops a diff with u <= the book's: a duplicate changes nothing
        await eventually(
            lambda: sum(health.venue(FAULTY).faults.values()) + health.venue(FAULTY).stale_intervals > faults_before,
            timeout=20,
            message=f"the feed never noticed {fault}",
        )
    await eventually(
        lambda: health.state(FAULTY, SYMBOL) is StreamState.LIVE and rig.client_book_matches_server(FAULTY),
        timeout=30,
        message=f"the client book did not converge after {fault}",
    )


@pytest.mark.parametrize("fault", list(Fault), ids=str)
async def test_fault_heals_and_no_signal_uses_the_faulty_book(rig: Rig, fault: Fault) -> None:
    await _heal_and_converge(rig, fault)
    assert rig.unusable_signals == []
    assert rig.engine.stats.signals_from_stale_books == 0
    assert rig.venues.servers[FAULTY].fault_counts[fault.value] == 1
