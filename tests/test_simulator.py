"""The market simulator: deterministic for a seed, venues that lag and catch up, valid books."""

from __future__ import annotations

import numpy as np

from bot.config import SimSymbolConfig, SimulatorConfig, SimVenueConfig
from bot.events import BookEvent
from bot.sim.market import MarketSimulator, SimBook

TICK_MS = 50


def _config(seed: int = 3, lag_ms: int = 500, spread_bps: float = 0.5) -> SimulatorConfig:
    return SimulatorConfig(
        seed=seed,
        tick_ms=TICK_MS,
        symbols={
            "BTC/USDT": SimSymbolConfig(start_price=97_000.0, volatility_bps=4.0, tick_size=0.1, top_size=0.4),
            "ETH/USDT": SimSymbolConfig(start_price=3_400.0, volatility_bps=5.0, tick_size=0.01, top_size=6.0),
        },
        venues={
            "lead": SimVenueConfig(lag_ms=0, noise_bps=0.2, spread_bps=spread_bps),
            "lag": SimVenueConfig(lag_ms=lag_ms, noise_bps=0.2, spread_bps=spread_bps),
            "extra": SimVenueConfig(lag_ms=100),
        },
    )


def _run(sim: MarketSimulator, ticks: int) -> list[SimBook]:
    return [book for _ in range(ticks) for book in sim.step()]


def _mids(books: list[SimBook], venue: str, symbol: str) -> np.ndarray:
    return np.array([(b.bids[0][0] + b.asks[0][0]) / 2 for b in books if b.venue == venue and b.symbol == symbol])


def test_same_seed_same_books_other_seed_other_books() -> None:
    venues = {"lead": ["BTC/USDT", "ETH/USDT"], "lag": ["BTC/USDT", "ETH/USDT"]}
    first = _run(MarketSimulator(_config(seed=3), venues), 300)
    again = _run(MarketSimulator(_config(seed=3), venues), 300)
    other = _run(MarketSimulator(_config(seed=4), venues), 300)
    assert first == again
    assert first != other


def test_adding_a_venue_leaves_the_other_venues_paths_alone() -> None:
    two = _run(MarketSimulator(_config(), {"lead": ["BTC/USDT"], "lag": ["BTC/USDT"]}), 200)
    three = _run(MarketSimulator(_config(), {"lead": ["BTC/USDT"], "lag": ["BTC/USDT"], "extra": ["BTC/USDT"]}), 200)
    assert [b for b in three if b.venue != "extra"] == two


def test_books_are_valid_events() -> None:
    books = _run(MarketSimulator(_config(), {"lead": ["BTC/USDT", "ETH/USDT"], "lag": ["ETH/USDT"]}), 400)
    for i, book in enumerate(books):
        BookEvent(venue=book.venue, symbol=book.symbol, ts=1_700_000_000_000 + i, bids=book.bids, asks=book.asks)
    assert len(books) == 400 * 3


def test_laggard_trails_the_leader_by_its_lag() -> None:
    """The laggard's mid-price returns match the leader's returns shifted by lag_ms / tick_ms ticks."""
    lag_ticks = 10
    books = _run(
        MarketSimulator(_config(lag_ms=lag_ticks * TICK_MS), {"lead": ["BTC/USDT"], "lag": ["BTC/USDT"]}), 4000
    )
    lead = np.diff(np.log(_mids(books, "lead", "BTC/USDT")))
    lag = np.diff(np.log(_mids(books, "lag", "BTC/USDT")))
    correlations = {shift: float(np.corrcoef(lead[: len(lead) - shift], lag[shift:])[0, 1]) for shift in range(25)}
    assert max(correlations, key=lambda shift: correlations[shift]) == lag_ticks
    assert correlations[lag_ticks] > 0.5


def test_gaps_open_and_close() -> None:
    """Crossed quotes between leader and laggard happen and do not last (real venue pairs: ~12-16% crossed)."""
    venues = {"lead": ["BTC/USDT"], "lag": ["BTC/USDT"]}
    books = _run(MarketSimulator(_config(lag_ms=700, spread_bps=4.0), venues), 6000)
    lead = [b for b in books if b.venue == "lead"]
    lag = [b for b in books if b.venue == "lag"]
    crossed = np.array(
        [a.bids[0][0] > b.asks[0][0] or b.bids[0][0] > a.asks[0][0] for a, b in zip(lead, lag, strict=True)]
    )
    openings = int(np.sum(crossed[1:] & ~crossed[:-1]))
    assert 0.02 < crossed.mean() < 0.5
    assert openings >= 10
