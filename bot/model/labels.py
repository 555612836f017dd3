"""Labels from recordings, no hand labelling: what executing a signal after the latency would have made,
and how long its gap stayed open.

For a sample (a signal) seen at replay time t with size q:

- execution: at t + latency, buy q on the buy venue's asks and sell q on the sell venue's bids of the books in
  force then (the latest accepted book of each venue received at or before t + latency), walking the levels;
  a book thinner than q fills what it holds, both legs the same size. PnL = proceeds - cost - taker fees
  (`LabelSettings.fee`), `captured_edge_bps` = PnL / cost, `profitable` = PnL > 0.
- lifetime: from t until the first later evaluation of the key (tradeable or not) whose net edge is <= 0;
  censored at t + horizon, and at the end of the recording.

Streaming and bounded: call `advance(now)` before the engine applies each event (at time `now`), register
`on_market_event` and `on_evaluations` on the engine, `add` a sample when its signal is emitted, and `finish`
at the end. Only the pending samples (those younger than the horizon) are held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.events import BookEvent, Level, MarketEvent
from strategies.base import Evaluation, OpportunityKey


@dataclass(frozen=True)
class LabelSettings:
    """How samples are labelled: execution latency, taker fees per venue (bps), the lifetime horizon."""

    latency_ms: int = 250
    fee_bps: Mapping[str, float] = field(default_factory=dict)
    default_fee_bps: float = 10.0
    horizon_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.horizon_ms <= 0:
            raise ValueError(f"latency_ms must be >= 0 and horizon_ms > 0, got {self.latency_ms}, {self.horizon_ms}")

    def fee(self, venue: str) -> float:
        """The venue's taker fee in bps (the default fee for a venue not listed)."""
        return self.fee_bps.get(venue, self.default_fee_bps)

    def to_meta(self) -> dict[str, Any]:
        """A JSON-ready dict (the model file's `label`)."""
        return {
            "latency_ms": self.latency_ms,
            "fee_bps": dict(sorted(self.fee_bps.items())),
            "default_fee_bps": self.default_fee_bps,
            "horizon_ms": self.horizon_ms,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LabelSettings:
        """Read what `to_meta` wrote."""
        return cls(
            latency_ms=int(meta["latency_ms"]),
            fee_bps={str(k): float(v) for k, v in meta["fee_bps"].items()},
            default_fee_bps=float(meta["default_fee_bps"]),
            horizon_ms=int(meta["horizon_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Execution:
    """Buying `filled` on asks and selling it on bids, in quote units."""

    filled: float
    cost: float
    proceeds: float
    fees: float

    @property
    def pnl(self) -> float:
        return self.proceeds - self.cost - self.fees

    @property
    def edge_bps(self) -> float:
        """PnL in bps of the buy notional (0 when nothing filled)."""
        return self.pnl / self.cost * 1e4 if self.cost > 0.0 else 0.0


def _take(levels: Sequence[Level], size: float) -> float:
    """Return the base size `levels` hold up to `size`."""
    held = 0.0
    for _, available in levels:
        held += available
        if held >= size:
            return size
    return held


def _notional(levels: Sequence[Level], size: float) -> float:
    remaining, total = size, 0.0
    for price, available in levels:
        take = min(available, remaining)
        total += take * price
        remaining -= take
        if remaining <= 0.0:
            break
    return total


def execute(
    asks: Sequence[Level], bids: Sequence[Level], size: float, buy_fee_bps: float, sell_fee_bps: float
) -> Execution:
    """Buy `size` on `asks` and sell it on `bids` (best first), both legs filling what the thinner book holds."""
    filled = min(_take(asks, size), _take(bids, size))
    cost, proceeds = _notional(asks, filled), _notional(bids, filled)
    return Execution(filled, cost, proceeds, cost * buy_fee_bps * 1e-4 + proceeds * sell_fee_bps * 1e-4)


@dataclass(slots=True)
class Label:
    """A sample's labels; `lifetime_ms` is None until known."""

    execution: Execution | None = None
    lifetime_ms: float | None = None
    lifetime_censored: bool = False


@dataclass(slots=True)
class _Pending:
    index: int
    key: OpportunityKey
    t: int
    size: float
    label: Label


class StreamingLabeler:
    """Label samples while a replay runs, holding only the pending ones (see the module docstring)."""

    def __init__(self, settings: LabelSettings) -> None:
        self.settings = settings
        self.labels: list[Label] = []
        self._books: dict[tuple[str, str], BookEvent] = {}
        self._executions: deque[_Pending] = deque()
        self._lifetimes: deque[_Pending] = deque()
        self._open_by_key: dict[OpportunityKey, deque[_Pending]] = {}
        self._now = 0

    def on_market_event(self, event: MarketEvent) -> None:
        """Keep the latest accepted book per venue and symbol (register on the engine)."""
        if isinstance(event, BookEvent):
            self._books[(event.venue, event.symbol)] = event

    def on_evaluations(self, batch: Sequence[Evaluation]) -> None:
        """End the lifetime of every pending sample of a key whose net edge is now <= 0."""
        if not self._open_by_key:
            return
        for ev in batch:
            if ev.net_edge_bps > 0.0:
                continue
            pending = self._open_by_key.pop((ev.kind, ev.symbol, ev.buy_venue, ev.sell_venue), None)
            for sample in pending or ():
                if sample.label.lifetime_ms is None:
                    sample.label.lifetime_ms = float(self._now - sample.t)

    def add(self, key: OpportunityKey, t: int, size: float) -> int:
        """Start labelling a sample seen at `t` (now); return its index in `labels`."""
        if key[0] != "cex_cex":
            raise ValueError(f"labels for kind {key[0]!r} are not implemented: only cex_cex legs (books) execute here")
        sample = _Pending(len(self.labels), key, t, size, Label())
        self.labels.append(sample.label)
        self._executions.append(sample)
        self._lifetimes.append(sample)
        self._open_by_key.setdefault(key, deque()).append(sample)
        return sample.index

    def advance(self, now: int) -> None:
        """Time moves to `now`, before the event at `now` is applied: resolve what fell due before it."""
        self._now = now
        due = now - self.settings.latency_ms
        while self._executions and self._executions[0].t < due:
            self._execute(self._executions.popleft())
        horizon = self.settings.horizon_ms
        while self._lifetimes and self._lifetimes[0].t + horizon < now:
            self._censor(self._lifetimes.popleft(), float(horizon))

    def finish(self, end_ms: int) -> None:
        """The recording ended at `end_ms`: execute against the last books and censor open lifetimes there."""
        while self._executions:
            self._execute(self._executions.popleft())
        while self._lifetimes:
            sample = self._lifetimes.popleft()
            self._censor(sample, float(min(max(end_ms - sample.t, 0), self.settings.horizon_ms)))

    def _censor(self, sample: _Pending, lifetime: float) -> None:
        if sample.label.lifetime_ms is None:
            sample.label.lifetime_ms = lifetime
            sample.label.lifetime_censored = True
        held = self._open_by_key.get(sample.key)
        if held is not None:
            while held and held[0].label.lifetime_ms is not None:
                held.popleft()
            if not held:
                del self._open_by_key[sample.key]

    def _execute(self, sample: _Pending) -> None:
        _, symbol, buy_venue, sell_venue = sample.key
        buy, sell = self._books[(buy_venue, symbol)], self._books[(sell_venue, symbol)]
        fee = self.settings.fee
        sample.label.execution = execute(buy.asks, sell.bids, sample.size, fee(buy_venue), fee(sell_venue))
