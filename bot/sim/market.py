"""Market simulator: one fair price per symbol, quoted by several venues with their own lag, noise,
spread and depth, so that cross-venue gaps open (a leader moves) and close (laggards catch up).

Deterministic for a seed: tick k's books depend only on the config and k, never on wall time.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bot.config import SimSymbolConfig, SimulatorConfig, SimVenueConfig
from bot.events import Level


@dataclass(frozen=True, slots=True)
class SimBook:
    """One venue's book for one symbol at one tick."""

    venue: str
    symbol: str
    tick: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    trades: tuple[SimTrade, ...] = ()


@dataclass(frozen=True, slots=True)
class SimTrade:
    """A taker trade at the touch: buys lift the best ask, sells hit the best bid."""

    price: float
    size: float
    side: str


def _stream_rng(seed: int, *names: str) -> np.random.Generator:
    # A stable per-stream seed, so adding a venue does not change the others' paths.
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def _round_to(value: float, step: float) -> float:
    decimals = max(0, -math.floor(math.log10(step)) + 1)
    return round(round(value / step) * step, decimals)


class _FairPrice:
    """Log-price random walk with Poisson jumps; keeps enough history to serve lagged prices."""

    def __init__(self, cfg: SimSymbolConfig, tick_s: float, rng: np.random.Generator, history: int) -> None:
        self._sigma = cfg.volatility_bps * 1e-4 * math.sqrt(tick_s)
        self._jump_probability = min(1.0, cfg.jumps_per_minute * tick_s / 60.0)
        self._jump = cfg.jump_bps * 1e-4
        self._rng = rng
        self._log_price = math.log(cfg.start_price)
        self._history: deque[float] = deque([cfg.start_price], maxlen=history)

    def step(self) -> None:
        move = self._sigma * float(self._rng.standard_normal())
        if float(self._rng.random()) < self._jump_probability:
            move += self._jump * (1.0 if self._rng.random() < 0.5 else -1.0) * (0.5 + float(self._rng.random()))
        self._log_price += move
        self._history.append(math.exp(self._log_price))

    def lagged(self, ticks: int) -> float:
        return self._history[max(0, len(self._history) - 1 - ticks)]


class _VenueQuoter:
    """How one venue quotes one symbol: lagged fair price, its own noise, spread and depth, and its trades."""

    def __init__(self, venue: SimVenueConfig, symbol: SimSymbolConfig, tick_ms: int, rng: np.random.Generator) -> None:
        self._venue = venue
        self._symbol = symbol
        self._lag_ticks = round(venue.lag_ms / tick_ms)
        self._rng = rng
        self._trades_per_tick = venue.trades_per_s * tick_ms / 1_000.0
        self._noise = 0.0
        # Ornstein-Uhlenbeck noise with a ~2 s half-life: venues drift apart and back.
        self._noise_decay = math.exp(-tick_ms / 2_000.0)
        self._noise_step = venue.noise_bps * 1e-4 * math.sqrt(1.0 - self._noise_decay**2)

    @property
    def lag_ticks(self) -> int:
        return self._lag_ticks

    def quote(self, fair: _FairPrice) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        self._noise = self._noise * self._noise_decay + self._noise_step * float(self._rng.standard_normal())
        mid = fair.lagged(self._lag_ticks) * (1.0 + self._noise)
        tick = self._symbol.tick_size
        half_spread = mid * self._venue.spread_bps * 0.5e-4
        best_bid = math.floor((mid - half_spread) / tick) * tick
        best_ask = max(math.ceil((mid + half_spread) / tick) * tick, best_bid + tick)
        gap = max(tick, _round_to(mid * self._venue.level_gap_bps * 1e-4, tick))
        levels = self._venue.depth_levels
        sizes = self._sizes(2 * levels)
        bids = tuple((_round_to(best_bid - i * gap, tick), sizes[i]) for i in range(levels))
        asks = tuple((_round_to(best_ask + i * gap, tick), sizes[levels + i]) for i in range(levels))
        return tuple(level for level in bids if level[0] > 0.0), asks

    def trades(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> tuple[SimTrade, ...]:
        count = int(self._rng.poisson(self._trades_per_tick))
        trades = []
        for _ in range(count):
            buy = bool(self._rng.random() < 0.5)
            price, available = asks[0] if buy else bids[0]
            size = max(self._symbol.lot_size, _round_to(available * float(self._rng.random()), self._symbol.lot_size))
            trades.append(SimTrade(price, size, "buy" if buy else "sell"))
        return tuple(trades)

    def _sizes(self, count: int) -> list[float]:
        lot = self._symbol.lot_size
        base = self._symbol.top_size * self._venue.size_scale
        growth = 1.0 + 0.15 * (np.arange(count) % (count // 2))
        raw = base * growth * self._rng.lognormal(0.0, 0.5, count)
        return [max(lot, _round_to(float(size), lot)) for size in raw]


class MarketSimulator:
    """Step the fair prices and every venue's books one tick at a time."""

    def __init__(self, config: SimulatorConfig, venue_symbols: Mapping[str, Sequence[str]]) -> None:
        self.config = config
        self.tick = 0
        tick_s = config.tick_ms / 1_000.0
        symbols = sorted({s for symbols in venue_symbols.values() for s in symbols})
        lag_ticks = max((round(config.venues[v].lag_ms / config.tick_ms) for v in venue_symbols), default=0)
        self._fair = {
            s: _FairPrice(config.symbols[s], tick_s, _stream_rng(config.seed, "fair", s), lag_ticks + 1)
            for s in symbols
        }
        self._quoters = {
            (v, s): _VenueQuoter(config.venues[v], config.symbols[s], config.tick_ms, _stream_rng(config.seed, v, s))
            for v, venue_syms in sorted(venue_symbols.items())
            for s in venue_syms
        }

    @property
    def symbols(self) -> list[str]:
        return sorted(self._fair)

    def fair_price(self, symbol: str) -> float:
        return self._fair[symbol].lagged(0)

    def step(self) -> list[SimBook]:
        """Advance one tick; return every venue's book for it."""
        self.tick += 1
        for fair in self._fair.values():
            fair.step()
        books = []
        for (venue, symbol), quoter in self._quoters.items():
            bids, asks = quoter.quote(self._fair[symbol])
            books.append(SimBook(venue, symbol, self.tick, bids, asks, quoter.trades(bids, asks)))
        return books
