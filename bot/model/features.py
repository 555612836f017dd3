"""Model inputs: streaming per-leg market statistics and, per opportunity key, a window of feature vectors.

The same tracker runs offline (dataset building, on a replay engine) and live (on the signals engine), so
training and serving see identical numbers. Register it on an engine:

    engine.add_market_listener(tracker.on_market_event)
    engine.add_evaluation_listener(tracker.on_evaluations)

Every evaluation of a key (tradeable or not) appends one vector to that key's ring, so a window reaches back
before the gap opened. Time is the receive-time clock (`recv_ts`, else `ts`) of the latest event seen; the
engine tells market listeners before its strategies run, so an evaluation's vector sees its own event.

Features are direction-aware: `buy_*` describe the venue we would buy on (its asks), `sell_*` the venue we
would sell on (its bids). Heavy-tailed quantities are log-transformed (`log1p`, or `slog` = sign·log1p|x|
for signed ones) so that the trainer's mean/std normalisation gives sane scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent, TradeEvent
from bot.recording import time_key
from strategies.base import Evaluation, OpportunityKey

_KEY_FEATURES = (
    "gross_edge_bps",  # the evaluation's gross edge at its size (at the touch when size is 0)
    "net_edge_bps",  # after every cost
    "notional_log",  # log1p(size × buy price), quote units; 0 when nothing pays
    "tradeable",  # 1 when the strategy would signal it
    "buy_depth_cover",  # log1p(base within DEPTH_BPS of the buy venue's best ask / size), capped at log1p(1000)
    "sell_depth_cover",  # the same for the sell venue's bids
    "moved_last",  # +1 when the buy venue's mid changed last, -1 the sell venue's, 0 at the same instant
    "buy_since_move_log",  # log1p(ms since the buy venue's mid last changed)
    "sell_since_move_log",
    "book_skew_slog",  # slog(buy book ts - sell book ts), ms
    "gas_base_fee_log",  # log1p(base fee gwei) assumed by the evaluation, else the latest seen, else 0
    "gas_tip_log",  # log1p(priority fee gwei), likewise
    "pool_liquidity_log",  # log1p(2 × quote reserve) of a pool leg, 0 without one
    "since_prev_log",  # log1p(ms since this key's previous vector): the windows are irregular in time
)
_LEG_FEATURES = (
    "imbalance",  # (bid size - ask size) / total over the top IMBALANCE_LEVELS levels
    "spread_bps",  # (ask - bid) / mid
    "ret_last_bps",  # log return of the mid at its last change, bps
    "ret_1s_bps",  # log(mid / EWMA of the mid with a 1 s time constant), bps
    "vol_log",  # log1p(EWMA volatility of mid log returns, bps per sqrt(s), 10 s time constant)
    "rate_log",  # log1p(book updates per second, 10 s time constant)
    "lag_slog",  # slog(recv_ts - ts), ms: feed lag plus clock offset (0 without recv_ts)
    "lag_jump_slog",  # slog(lag - its EWMA), ms: a lag spike, free of the constant clock offset
    "volume_log",  # log1p(traded quote notional per second, 10 s time constant)
    "flow",  # (taker buy - taker sell) / traded notional, same decay
)
FEATURE_NAMES: tuple[str, ...] = (
    _KEY_FEATURES + tuple("buy_" + name for name in _LEG_FEATURES) + tuple("sell_" + name for name in _LEG_FEATURES)
)
"""Every feature the tracker computes, in the order a model file stores them."""

DEPTH_BPS = 5.0
IMBALANCE_LEVELS = 5
DEPTH_COVER_CAP = 1_000.0
RETURN_TAU_MS = 1_000.0
STATS_TAU_MS = 10_000.0
LAG_ALPHA = 0.05

_N_KEY = len(_KEY_FEATURES)
_COVER_CAPPED = math.log1p(DEPTH_COVER_CAP)


def slog(x: float) -> float:
    """Return sign(x)·log1p(|x|): a log scale for signed quantities."""
    return math.log1p(x) if x >= 0.0 else -math.log1p(-x)


class _Leg:
    """Streaming statistics of one venue (a book, or a pool as `{dex}:{address}`) for one symbol."""

    __slots__ = (
        "_snap",
        "_snap_ms",
        "ask",
        "bid",
        "book_ms",
        "change_ms",
        "depth_ask",
        "depth_bid",
        "ewma_mid",
        "flow_acc",
        "imbalance",
        "lag",
        "lag_ewma",
        "last_ms",
        "liquidity_log",
        "mid",
        "rate_acc",
        "ret_last_bps",
        "spread_bps",
        "trade_ms",
        "var_acc",
        "volume_acc",
    )

    def __init__(self) -> None:
        self.bid = self.ask = self.mid = 0.0
        self.depth_bid = self.depth_ask = self.imbalance = self.spread_bps = self.liquidity_log = 0.0
        self.ret_last_bps = self.ewma_mid = self.var_acc = self.rate_acc = 0.0
        self.book_ms = self.change_ms = self.trade_ms = self.last_ms = -1
        self.lag = self.lag_ewma = 0.0
        self.volume_acc = self.flow_acc = 0.0
        self._snap_ms = -1
        self._snap: tuple[float, ...] = ()

    def on_quote(self, now: int, bid: float, ask: float, lag: float) -> None:
        """Advance the mid's statistics to `now` and take the new touch."""
        mid = (bid + ask) * 0.5
        if self.book_ms < 0:
            self.ewma_mid = mid
            self.change_ms = now
            self.lag_ewma = lag
        else:
            dt = max(now - self.book_ms, 0)
            # The mid was constant since the last update: the EWMA decays towards it.
            self.ewma_mid = self.mid + (self.ewma_mid - self.mid) * math.exp(-dt / RETURN_TAU_MS)
            decay = math.exp(-dt / STATS_TAU_MS)
            self.var_acc *= decay
            self.rate_acc *= decay
            if mid != self.mid:
                ret = math.log(mid / self.mid)
                self.ret_last_bps = ret * 1e4
                self.var_acc += ret * ret
                self.change_ms = now
            self.lag_ewma += LAG_ALPHA * (lag - self.lag_ewma)
        self.rate_acc += 1.0
        self.bid, self.ask, self.mid, self.lag = bid, ask, mid, lag
        self.spread_bps = (ask - bid) / mid * 1e4
        self.book_ms = self.last_ms = now
        self._snap_ms = -1

    def on_book(self, now: int, book: BookEvent) -> None:
        bids, asks = book.bids, book.asks
        bid, ask = bids[0][0], asks[0][0]
        self.on_quote(now, bid, ask, float(book.recv_ts - book.ts) if book.recv_ts is not None else 0.0)
        floor, ceiling = bid * (1.0 - DEPTH_BPS * 1e-4), ask * (1.0 + DEPTH_BPS * 1e-4)
        depth = 0.0
        for price, size in bids:
            if price < floor:
                break
            depth += size
        self.depth_bid = depth
        depth = 0.0
        for price, size in asks:
            if price > ceiling:
                break
            depth += size
        self.depth_ask = depth
        bid_size = sum(size for _, size in bids[:IMBALANCE_LEVELS])
        ask_size = sum(size for _, size in asks[:IMBALANCE_LEVELS])
        self.imbalance = (bid_size - ask_size) / (bid_size + ask_size)

    def on_pool(self, now: int, pool: PoolEvent) -> None:
        """A constant-product pool as a leg: its touch is the spot price either side of the fee."""
        keep = 1.0 - pool.fee_bps * 1e-4
        price = pool.price
        self.on_quote(now, price * keep, price / keep, float(pool.recv_ts - pool.ts) if pool.recv_ts else 0.0)
        # Base traded before the marginal price moves DEPTH_BPS: x·(1/sqrt(1 - d) - 1) on a CP curve.
        self.depth_bid = self.depth_ask = pool.reserve_base * (1.0 / math.sqrt(1.0 - DEPTH_BPS * 1e-4) - 1.0)
        self.imbalance = 0.0
        self.liquidity_log = math.log1p(2.0 * pool.reserve_quote)

    def on_trade(self, now: int, trade: TradeEvent) -> None:
        if self.trade_ms >= 0:
            decay = math.exp(-max(now - self.trade_ms, 0) / STATS_TAU_MS)
            self.volume_acc *= decay
            self.flow_acc *= decay
        notional = trade.price * trade.size
        self.volume_acc += notional
        self.flow_acc += notional if trade.side == "buy" else -notional
        self.trade_ms = self.last_ms = max(now, self.last_ms)
        self._snap_ms = -1

    def snapshot(self, now: int) -> tuple[float, ...]:
        """The leg's features (in `_LEG_FEATURES` order) at `now`; computed once per instant."""
        if self._snap_ms == now:
            return self._snap
        dt = max(now - self.book_ms, 0)
        decay = math.exp(-dt / STATS_TAU_MS)
        ewma = self.mid + (self.ewma_mid - self.mid) * math.exp(-dt / RETURN_TAU_MS)
        # var_acc sums squared returns over ~STATS_TAU_MS: divide by that span for a variance per second.
        vol = math.sqrt(self.var_acc * decay * 1_000.0 / STATS_TAU_MS) * 1e4
        rate = self.rate_acc * decay * 1_000.0 / STATS_TAU_MS
        if self.trade_ms >= 0:
            volume_acc = self.volume_acc * math.exp(-max(now - self.trade_ms, 0) / STATS_TAU_MS)
            volume = volume_acc * 1_000.0 / STATS_TAU_MS
            flow = self.flow_acc / self.volume_acc if self.volume_acc > 0.0 else 0.0
        else:
            volume = flow = 0.0
        self._snap = (
            self.imbalance,
            self.spread_bps,
            self.ret_last_bps,
            math.log(self.mid / ewma) * 1e4,
            math.log1p(vol),
            math.log1p(rate),
            slog(self.lag),
            slog(self.lag - self.lag_ewma),
            math.log1p(volume),
            flow,
        )
        self._snap_ms = now
        return self._snap


class _Ring:
    __slots__ = ("count", "last_ms", "pos", "slot")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.pos = 0
        self.count = 0
        self.last_ms = -1


class FeatureTracker:
    """Streaming per-venue statistics and per-opportunity-key windows of raw feature vectors."""

    def __init__(self, window: int = 32, features: Sequence[str] = FEATURE_NAMES) -> None:
        """Keep the last `window` vectors per key; `windows()` returns `features` (a subset of FEATURE_NAMES)."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        unknown = [name for name in features if name not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown features {unknown}; known: {list(FEATURE_NAMES)}")
        self.window = window
        self.features = tuple(features)
        self._select: NDArray[np.intp] | None = None
        if self.features != FEATURE_NAMES:
            self._select = np.array([FEATURE_NAMES.index(name) for name in self.features], dtype=np.intp)
        self._legs: dict[tuple[str, str], _Leg] = {}
        self._rings: dict[OpportunityKey, _Ring] = {}
        self._free: list[int] = []
        self._data = np.zeros((16, window, len(FEATURE_NAMES)), dtype=np.float32)
        self._now = 0
        self._gas: tuple[float, float] | None = None

    @property
    def now_ms(self) -> int:
        """The tracker's clock: the latest receive time (else `ts`) of the events it has seen."""
        return self._now

    @property
    def keys(self) -> list[OpportunityKey]:
        return list(self._rings)

    def _leg(self, venue: str, symbol: str) -> _Leg:
        leg = self._legs.get((venue, symbol))
        if leg is None:
            leg = self._legs[(venue, symbol)] = _Leg()
        return leg

    def on_market_event(self, event: MarketEvent) -> None:
        """Update the statistics of the venue (or pool) the event comes from."""
        now = max(self._now, time_key(event))
        self._now = now
        if isinstance(event, BookEvent):
            self._leg(event.venue, event.symbol).on_book(now, event)
        elif isinstance(event, TradeEvent):
            self._leg(event.venue, event.symbol).on_trade(now, event)
        elif isinstance(event, PoolEvent):
            self._leg(f"{event.dex}:{event.pool}", event.symbol).on_pool(now, event)
        elif isinstance(event, GasEvent):
            self._gas = (math.log1p(event.base_fee_gwei), math.log1p(event.priority_fee_gwei))

    def on_evaluations(self, batch: Sequence[Evaluation]) -> None:
        """Append one feature vector per evaluation to its key's window."""
        now = self._now
        legs, rings = self._legs, self._rings
        default_gas = self._gas or (0.0, 0.0)
        rows: list[tuple[float, ...]] = []
        slots: list[int] = []
        positions: list[int] = []
        log1p = math.log1p
        for ev in batch:
            buy = legs.get((ev.buy_venue, ev.symbol))
            sell = legs.get((ev.sell_venue, ev.symbol))
            if buy is None or sell is None:
                continue  # an evaluation of a venue this tracker has not seen (registered late): nothing to say
            key = (ev.kind, ev.symbol, ev.buy_venue, ev.sell_venue)
            ring = rings.get(key)
            if ring is None:
                ring = rings[key] = _Ring(self._new_slot())
            size = ev.size
            if size > 0.0:
                buy_cover = log1p(min(buy.depth_ask / size, DEPTH_COVER_CAP))
                sell_cover = log1p(min(sell.depth_bid / size, DEPTH_COVER_CAP))
            else:
                buy_cover = sell_cover = _COVER_CAPPED
            buy_change, sell_change = buy.change_ms, sell.change_ms
            skew = ev.buy_book_ts - ev.sell_book_ts
            gas = (
                default_gas
                if ev.base_fee_gwei is None
                else (log1p(ev.base_fee_gwei), log1p(ev.priority_fee_gwei or 0.0))
            )
            head = (
                ev.gross_edge_bps,
                ev.net_edge_bps,
                log1p(size * ev.buy_price),
                1.0 if ev.tradeable else 0.0,
                buy_cover,
                sell_cover,
                1.0 if buy_change > sell_change else (-1.0 if buy_change < sell_change else 0.0),
                log1p(max(now - buy_change, 0)),
                log1p(max(now - sell_change, 0)),
                log1p(skew) if skew >= 0 else -log1p(-skew),
                gas[0],
                gas[1],
                max(buy.liquidity_log, sell.liquidity_log),
                log1p(max(now - ring.last_ms, 0)) if ring.last_ms >= 0 else 0.0,
            )
            rows.append(head + buy.snapshot(now) + sell.snapshot(now))
            slots.append(ring.slot)
            positions.append(ring.pos)
            ring.pos = (ring.pos + 1) % self.window
            ring.count += 1
            ring.last_ms = now
        if rows:
            self._data[slots, positions] = rows

    def _new_slot(self) -> int:
        if self._free:
            return self._free.pop()
        used = len(self._rings)  # every slot below this is taken when none is free
        if used >= len(self._data):
            grown = np.zeros((2 * len(self._data), *self._data.shape[1:]), dtype=np.float32)
            grown[: len(self._data)] = self._data
            self._data = grown
        return used

    def windows(self, keys: Sequence[OpportunityKey]) -> NDArray[np.float32]:
        """Return (B, T, F) raw windows, oldest first; a key with fewer than T vectors repeats its oldest.

        A key never evaluated gets zeros.
        """
        window = self.window
        slots = np.zeros(len(keys), dtype=np.intp)
        pos = np.zeros(len(keys), dtype=np.intp)
        count = np.zeros(len(keys), dtype=np.intp)
        for i, key in enumerate(keys):
            ring = self._rings.get(key)
            if ring is not None:
                slots[i], pos[i], count[i] = ring.slot, ring.pos, min(ring.count, window)
        steps = np.arange(window)
        # Step i reads the (c - T + i)-th newest vector, clamped at the oldest one held.
        index = (pos[:, None] - count[:, None] + np.maximum(steps[None, :] - (window - count[:, None]), 0)) % window
        out = self._data[slots[:, None], index]
        out[count == 0] = 0.0
        if self._select is not None:
            out = out[:, :, self._select]
        return np.ascontiguousarray(out)

    def forget(self, older_than_ms: int) -> int:
        """Drop keys (and venue statistics) not updated since `older_than_ms`; return how many keys went."""
        stale = [key for key, ring in self._rings.items() if ring.last_ms < older_than_ms]
        for key in stale:
            ring = self._rings.pop(key)
            self._data[ring.slot] = 0.0
            self._free.append(ring.slot)
        for leg_key in [k for k, leg in self._legs.items() if leg.last_ms < older_than_ms]:
            del self._legs[leg_key]
        return len(stale)
