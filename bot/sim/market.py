"""Market simulator: one fair price per symbol, quoted by several venues with their own lag, catch-up speed,
noise, spread, depth and update rate, so that cross-venue gaps open (a leader moves) and close (laggards
catch up).

How gaps close depends on recent history, as in real markets, not only on the current books:

- the fair price has stochastic volatility (a mean-reverting log volatility, kicked up by jumps), so calm
  and turbulent spells alternate, and spreads may widen with it (`spread_vol_beta`);
- a laggard moves toward the lagged fair price by partial adjustment, m ← m + k·(target − m) per tick,
  with k from a fast or a slow regime that persists for tens of seconds (`catch_up_*`): how fast gaps
  closed lately tells how fast the next one will;
- with `leader_regime_s`, leadership of a symbol passes between venues in regimes: the leader quotes the
  fair price at once, the others trail it by their `lag_ms`.

With the defaults (catch-up at once, constant volatility, no leader regimes, a book every tick) a venue
simply quotes the fair price of `lag_ms` ago plus its own noise.

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


_MAX_LOG_VOL = math.log(10.0)
"""Volatility stays within 10× its mean, however many jumps come in a row."""


def _stream_rng(seed: int, *names: str) -> np.random.Generator:
    # A stable per-stream seed, so adding a venue does not change the others' paths.
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step)) + 1)


def _round_to(value: float, step: float) -> float:
    return round(round(value / step) * step, _decimals(step))


def _per_tick(time_constant_ms: float, tick_ms: int) -> float:
    """Share of the remaining distance closed per tick by a move with this time constant (0 ms: all of it)."""
    return 1.0 if time_constant_ms <= 0.0 else -math.expm1(-tick_ms / time_constant_ms)


class _FairPrice:
    """Log-price random walk with stochastic volatility and Poisson jumps; keeps history to serve lagged prices."""

    def __init__(self, cfg: SimSymbolConfig, tick_s: float, rng: np.random.Generator, history: int) -> None:
        self._sigma = cfg.volatility_bps * 1e-4 * math.sqrt(tick_s)
        self._jump_probability = min(1.0, cfg.jumps_per_minute * tick_s / 60.0)
        self._jump = cfg.jump_bps * 1e-4
        self._rng = rng
        self._log_price = math.log(cfg.start_price)
        self._history: deque[float] = deque([self._log_price], maxlen=history)
        # Log volatility: an Ornstein-Uhlenbeck process around -η², less what the jumps' kicks add on average, so
        # that the mean variance stays near volatility_bps².
        self._stochastic = cfg.vol_of_vol > 0.0 or cfg.jump_vol_kick > 0.0
        self._vol_decay = math.exp(-math.log(2.0) * tick_s / cfg.vol_half_life_s)
        kicks = self._jump_probability * cfg.jump_vol_kick / (1.0 - self._vol_decay)
        self._vol_mean = -(cfg.vol_of_vol**2) - kicks
        self._log_vol = self._vol_mean + kicks
        self._vol_step = cfg.vol_of_vol * math.sqrt(1.0 - self._vol_decay**2)
        self._vol_kick = cfg.jump_vol_kick

    @property
    def vol_ratio(self) -> float:
        """Current volatility over the configured mean."""
        return math.exp(self._log_vol) if self._stochastic else 1.0

    def step(self) -> None:
        ratio = self.vol_ratio
        move = self._sigma * ratio * float(self._rng.standard_normal())
        # Each jump stirs volatility up for a while: clustering. (A jump rate that grew with volatility would
        # feed on itself.)
        if float(self._rng.random()) < self._jump_probability:
            move += self._jump * (1.0 if self._rng.random() < 0.5 else -1.0) * (0.5 + float(self._rng.random()))
            self._log_vol += self._vol_kick
        if self._stochastic:
            shock = self._vol_step * float(self._rng.standard_normal())
            log_vol = self._vol_mean + (self._log_vol - self._vol_mean) * self._vol_decay + shock
            self._log_vol = min(log_vol, _MAX_LOG_VOL)
        self._log_price += move
        self._history.append(self._log_price)

    def lagged(self, ticks: int) -> float:
        """Log fair price `ticks` ticks ago (the oldest kept when further back)."""
        return self._history[max(0, len(self._history) - 1 - ticks)]


class _Leadership:
    """Which venue leads one symbol, when leadership passes between venues in regimes (else none does)."""

    def __init__(self, venues: Sequence[str], regime_ticks: float | None, rng: np.random.Generator) -> None:
        self._venues = sorted(venues)
        self.leader: str | None = None
        self._switch = 0.0
        if regime_ticks is not None and self._venues:
            self._switch = 1.0 / regime_ticks
            self.leader = self._venues[int(rng.integers(len(self._venues)))]
        self._rng = rng

    def step(self) -> None:
        if len(self._venues) > 1 and float(self._rng.random()) < self._switch:
            others = [v for v in self._venues if v != self.leader]
            self.leader = others[int(self._rng.integers(len(others)))]


class _VenueQuoter:
    """How one venue quotes one symbol: a partially adjusting lagged fair price, its own noise, spread and depth."""

    def __init__(self, venue: SimVenueConfig, symbol: SimSymbolConfig, tick_ms: int, rng: np.random.Generator) -> None:
        self._venue = venue
        self._symbol = symbol
        self._lag_ticks = round(venue.lag_ms / tick_ms)
        self._rng = rng
        self._trades_per_tick = venue.trades_per_s * tick_ms / 1_000.0
        self._noise = 0.0
        # Ornstein-Uhlenbeck noise: venues drift apart and back.
        self._noise_decay = math.exp(-tick_ms / venue.noise_memory_ms)
        self._noise_step = venue.noise_bps * 1e-4 * math.sqrt(1.0 - self._noise_decay**2)
        self._k_fast = _per_tick(venue.catch_up_fast_ms, tick_ms)
        self._k_slow = _per_tick(venue.catch_up_slow_ms, tick_ms)
        self._regime_switch = tick_ms / (venue.catch_up_regime_s * 1_000.0)
        self.slow = False
        """Whether the venue is in its slow catch-up regime."""
        self._publish = 1.0 if venue.quotes_per_s is None else min(1.0, venue.quotes_per_s * tick_ms / 1_000.0)
        self._log_mid: float | None = None
        # Rounding and size shapes are the same every tick: work them out once.
        tick, lot, levels = symbol.tick_size, symbol.lot_size, venue.depth_levels
        self._price_decimals = _decimals(tick)
        self._lot_decimals = _decimals(lot)
        self._steps = np.arange(levels, dtype=float)
        self._growth = symbol.top_size * venue.size_scale * (1.0 + 0.15 * (np.arange(2 * levels) % levels))

    @property
    def lag_ticks(self) -> int:
        return self._lag_ticks

    def advance(self, fair: _FairPrice, leads: bool) -> bool:
        """Move the venue's price one tick toward its target; return whether it publishes a book this tick."""
        rng = self._rng
        self._noise = self._noise * self._noise_decay + self._noise_step * float(rng.standard_normal())
        if self._k_fast != self._k_slow and float(rng.random()) < self._regime_switch:
            self.slow = not self.slow
        if leads:
            target, k = fair.lagged(0), 1.0
        else:
            target, k = fair.lagged(self._lag_ticks), self._k_slow if self.slow else self._k_fast
        self._log_mid = target if self._log_mid is None else self._log_mid + k * (target - self._log_mid)
        return self._publish >= 1.0 or float(rng.random()) < self._publish

    def quote(self, vol_ratio: float) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """Build the book around the current price."""
        assert self._log_mid is not None, "advance() first"
        mid = math.exp(self._log_mid) * (1.0 + self._noise)
        tick, lot = self._symbol.tick_size, self._symbol.lot_size
        spread_bps = self._venue.spread_bps
        if self._venue.spread_vol_beta > 0.0:
            spread_bps *= vol_ratio**self._venue.spread_vol_beta
        half_spread = mid * spread_bps * 0.5e-4
        best_bid = math.floor((mid - half_spread) / tick) * tick
        best_ask = max(math.ceil((mid + half_spread) / tick) * tick, best_bid + tick)
        gap = max(tick, _round_to(mid * self._venue.level_gap_bps * 1e-4, tick))
        levels = len(self._steps)
        raw = self._growth * self._rng.lognormal(0.0, 0.5, 2 * levels)
        sizes = np.maximum(lot, np.round(np.round(raw / lot) * lot, self._lot_decimals)).tolist()
        digits = self._price_decimals
        bid_prices = np.round(np.round((best_bid - self._steps * gap) / tick) * tick, digits).tolist()
        ask_prices = np.round(np.round((best_ask + self._steps * gap) / tick) * tick, digits).tolist()
        bids = tuple((p, s) for p, s in zip(bid_prices, sizes[:levels], strict=True) if p > 0.0)
        asks = tuple(zip(ask_prices, sizes[levels:], strict=True))
        return bids, asks

    def trades(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> tuple[SimTrade, ...]:
        count = int(self._rng.poisson(self._trades_per_tick))
        trades = []
        for _ in range(count):
            buy = bool(self._rng.random() < 0.5)
            price, available = asks[0] if buy else bids[0]
            size = max(self._symbol.lot_size, _round_to(available * float(self._rng.random()), self._symbol.lot_size))
            trades.append(SimTrade(price, size, "buy" if buy else "sell"))
        return tuple(trades)


class MarketSimulator:
    """Step the fair prices and every venue's books one tick at a time."""

    def __init__(self, config: SimulatorConfig, venue_symbols: Mapping[str, Sequence[str]]) -> None:
        self.config = config
        self.tick = 0
        tick_s = config.tick_ms / 1_000.0
        symbols = sorted({s for symbols in venue_symbols.values() for s in symbols})
        history = max((round(config.venues[v].lag_ms / config.tick_ms) for v in venue_symbols), default=0) + 1
        self._fair = {
            s: _FairPrice(config.symbols[s], tick_s, _stream_rng(config.seed, "fair", s), history) for s in symbols
        }
        regime_ticks = None if config.leader_regime_s is None else config.leader_regime_s / tick_s
        self._leaders = {
            s: _Leadership(
                [v for v, venue_syms in venue_symbols.items() if s in venue_syms],
                regime_ticks,
                _stream_rng(config.seed, "leader", s),
            )
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
        """Return the current fair price of `symbol`."""
        return math.exp(self._fair[symbol].lagged(0))

    def leader(self, symbol: str) -> str | None:
        """Return the venue that leads `symbol` now (None without leader regimes)."""
        return self._leaders[symbol].leader

    def slow_catch_up(self, venue: str, symbol: str) -> bool:
        """Tell whether `venue` is in its slow catch-up regime for `symbol` (for tests and diagnostics)."""
        return self._quoters[(venue, symbol)].slow

    def step(self) -> list[SimBook]:
        """Advance one tick; return the book of every venue that updates in it."""
        self.tick += 1
        for symbol, fair in self._fair.items():
            fair.step()
            self._leaders[symbol].step()
        books = []
        for (venue, symbol), quoter in self._quoters.items():
            fair = self._fair[symbol]
            if not quoter.advance(fair, self._leaders[symbol].leader == venue):
                continue
            bids, asks = quoter.quote(fair.vol_ratio)
            books.append(SimBook(venue, symbol, self.tick, bids, asks, quoter.trades(bids, asks)))
        return books
