"""The execution window of a signal and the gas plan of its on-chain legs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bot.events import GasEvent
from bot.messages import GasPlan, Signal
from bot.risk.settings import RiskConfig

SpreadForecast = Callable[[Signal, float | None], float | None]
"""Hook for a spread forecast: (signal, its key's update interval in ms or None when not measured yet) →
expected remaining lifetime of the gap in ms from the signal's update, or None to use the signal's own."""


class FeedLag:
    """Feed lag per venue: configured, else measured, else `default_feed_lag_ms`.

    Measured as an EWMA of now − `recv_ts` of the books seen: `recv_ts` is the signals role's local clock, as is
    ours (one machine, or NTP between machines). A book without `recv_ts` is not measured: its `ts` is the venue's
    clock, which can be seconds away from ours, and lag from it would be clock offset, not lag.
    """

    MIN_SAMPLES = 10
    ALPHA = 0.05

    def __init__(self, config: RiskConfig) -> None:
        self._config = config
        self._ewma: dict[str, float] = {}
        self._samples: dict[str, int] = {}

    def observe(self, venue: str, lag_ms: float) -> None:
        """One measured lag (negative values, from clocks that disagree, count as 0)."""
        lag = max(0.0, lag_ms)
        held = self._ewma.get(venue)
        self._ewma[venue] = lag if held is None else held + self.ALPHA * (lag - held)
        self._samples[venue] = self._samples.get(venue, 0) + 1

    def of(self, venue: str) -> float:
        """The venue's feed lag in ms."""
        configured = self._config.rules(venue).feed_lag_ms
        if configured is not None:
            return configured
        if self._samples.get(venue, 0) >= self.MIN_SAMPLES:
            return self._ewma[venue]
        return self._config.default_feed_lag_ms


class UpdateIntervals:
    """How often each market stream (a venue's book, a pool) updates: EWMA of the gaps between its events' `ts`.

    Gaps are taken within one stream, whose `ts` is one clock by contract, so venue and local clocks are never
    mixed. Books reach other processes at most `redis.book_rate_per_s` per book, so a faster book is measured at
    that rate (intervals too long).
    """

    MIN_SAMPLES = 5
    ALPHA = 0.1

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self._ewma: dict[tuple[str, str], float] = {}
        self._samples: dict[tuple[str, str], int] = {}

    def observe(self, venue: str, symbol: str, ts: int) -> None:
        """One event of the (venue, symbol) stream; an event older than the last one is ignored."""
        key = (venue, symbol)
        last = self._last.get(key)
        if last is not None and ts < last:
            return
        self._last[key] = ts
        if last is None:
            return
        gap = float(ts - last)
        held = self._ewma.get(key)
        self._ewma[key] = gap if held is None else held + self.ALPHA * (gap - held)
        self._samples[key] = self._samples.get(key, 0) + 1

    def of(self, venue: str, symbol: str) -> float | None:
        """The stream's mean update interval in ms, None until MIN_SAMPLES gaps were seen."""
        key = (venue, symbol)
        if self._samples.get(key, 0) < self.MIN_SAMPLES:
            return None
        return max(1.0, self._ewma[key])

    def of_signal(self, signal: Signal) -> float | None:
        """The update interval of the signal's key: it is evaluated on each update of either leg, so the rates add.

        Legs not measured yet are left out; None when neither is measured.
        """
        rate = 0.0
        for venue in (signal.buy_venue, signal.sell_venue):
            interval = self.of(venue, signal.symbol)
            if interval is not None:
                rate += 1.0 / interval
        return 1.0 / rate if rate > 0.0 else None


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """When to execute (ms since epoch, local clock) and, with on-chain legs, the gas plan and target block."""

    not_before_ts: int
    deadline_ts: int
    gas: GasPlan | None

    @property
    def closed(self) -> bool:
        """True when the deadline comes before the window opens."""
        return self.deadline_ts < self.not_before_ts


def is_on_chain(venue: str) -> bool:
    """Pool legs are named `dex:address`; CEX venues have no colon."""
    return ":" in venue


def gas_plan(gas: GasEvent, config: RiskConfig) -> GasPlan:
    """max fee = base fee × headroom + tip, for the block after the latest (or `blocks_ahead` later)."""
    tip = gas.priority_fee_gwei * config.tip_multiplier
    return GasPlan(
        max_fee_gwei=gas.base_fee_gwei * config.gas_headroom + tip,
        priority_fee_gwei=tip,
        target_block=gas.block + config.blocks_ahead,
    )


def target_block_ms(gas: GasEvent, config: RiskConfig) -> float:
    """When the target block is expected, on the local clock: the latest block's receive time (`recv_ts`, else
    its `ts`) + `blocks_ahead` × `block_time_ms`."""
    seen = gas.recv_ts if gas.recv_ts is not None else gas.ts
    return seen + config.blocks_ahead * config.block_time_ms


def plan_window(
    signal: Signal,
    now_ms: int,
    published_ms: int,
    lag: FeedLag,
    config: RiskConfig,
    gas: GasEvent | None,
    lifetime_ms: float | None = None,
) -> WindowPlan:
    """The window of `signal`, decided at `now_ms`; `published_ms` is when it reached the bus (stream id time).

    The gap was seen at about `published_ms` − the slower leg's feed lag (venue clocks and ours disagree, so
    the signal's own `ts` is not used); it lasts `lifetime_ms` (a spread forecast's) from then if given, else
    the signal's `expected_lifetime_ms`. Orders land one way (half the round trip) after they are sent, so the
    window is [now + slowest one-way, gap end − slowest one-way]. An on-chain leg lands in the target block, so
    with one the window opens no earlier than that block's expected time (`target_block_ms`); a gap expected to
    end before it gives a closed window.
    """
    legs = (signal.buy_venue, signal.sell_venue)
    one_way = max(config.rules(v).order_rtt_ms / 2.0 for v in legs)
    seen_ms = published_ms - max(lag.of(v) for v in legs)
    lifetime = lifetime_ms if lifetime_ms is not None and math.isfinite(lifetime_ms) else signal.expected_lifetime_ms
    gap_end = seen_ms + max(0.0, lifetime)
    not_before = now_ms + one_way
    plan: GasPlan | None = None
    if any(is_on_chain(v) for v in legs) and gas is not None:
        plan = gas_plan(gas, config)
        not_before = max(not_before, target_block_ms(gas, config))
    return WindowPlan(math.ceil(not_before), math.floor(gap_end - one_way), plan)
