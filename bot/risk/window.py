"""The execution window of a signal and the gas plan of its on-chain legs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.events import GasEvent
from bot.messages import GasPlan, Signal
from bot.risk.settings import RiskConfig

SpreadForecast = Callable[[Signal, int], float | None]
"""Hook for a spread forecast: (signal, now_ms) → expected remaining lifetime in ms, or None to use the signal's."""


class FeedLag:
    """Feed lag per venue: configured, else measured (EWMA of now − receive time of the books seen), else default."""

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
        configured = self._config.rules(venue).feed_lag_ms
        if configured is not None:
            return configured
        if self._samples.get(venue, 0) >= self.MIN_SAMPLES:
            return self._ewma[venue]
        return self._config.default_feed_lag_ms


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """When to execute (ms since epoch, local clock) and, with on-chain legs, the gas plan and target block."""

    not_before_ts: int
    deadline_ts: int
    gas: GasPlan | None

    @property
    def closed(self) -> bool:
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


def plan_window(
    signal: Signal,
    now_ms: int,
    published_ms: int,
    lag: FeedLag,
    config: RiskConfig,
    gas: GasEvent | None,
    forecast: SpreadForecast | None = None,
) -> WindowPlan:
    """The window of `signal`, decided at `now_ms`; `published_ms` is when it reached the bus (stream id time).

    The gap was seen at about `published_ms` − the slower leg's feed lag (venue clocks and ours disagree, so
    the signal's own `ts` is not used); it lasts the forecast's remaining lifetime if one is given, else the
    signal's `expected_lifetime_ms`. Orders land one way (half the round trip) after they are sent, so the
    window is [now + slowest one-way, gap end − slowest one-way]. An on-chain leg lands in the target block:
    no earlier than the next block time after now.
    """
    legs = (signal.buy_venue, signal.sell_venue)
    one_way = max(config.rules(v).order_rtt_ms / 2.0 for v in legs)
    seen_ms = published_ms - max(lag.of(v) for v in legs)
    lifetime = None if forecast is None else forecast(signal, now_ms)
    gap_end = now_ms + lifetime if lifetime is not None else seen_ms + signal.expected_lifetime_ms
    not_before = now_ms + one_way
    plan: GasPlan | None = None
    if any(is_on_chain(v) for v in legs) and gas is not None:
        plan = gas_plan(gas, config)
    return WindowPlan(int(not_before), int(gap_end - one_way), plan)
