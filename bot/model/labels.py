"""Labels from recordings, no hand labelling: what executing a signal after the latency would have made,
and how long its gap stayed open.

For a sample (a signal) seen at replay time t with size q, buy q on the buy leg and sell it on the sell leg:

- a book leg (a CEX venue) executes at t + latency on that venue's book in force then (the latest accepted book
  received at or before t + latency), walking the levels, and pays the venue's taker fee (`LabelSettings.fee`);
- a pool leg (`{dex}:{address}`) executes in the next block after t + latency: the first block whose first gas
  or pool event was received at or after t + latency, against the pool as of that block (its latest state of
  that block or before), a constant-product swap with the pool's fee inside its price. The transaction (one per
  sample, both swaps of a dex_dex trade in it) pays gas at that block's base fee plus tip for the sample's
  `GasCharge` units, in quote at the gas token price the signal assumed. A block is complete once an event of a
  later block arrives, or when the recording ends.

Both legs trade the same size: what the thinner book holds (a swap out of a pool that cannot pay it reverts:
nothing trades, the gas is paid). PnL = proceeds - cost - taker fees - gas, `captured_edge_bps` = PnL / cost,
`profitable` = PnL > 0. Samples still waiting at the end execute on the last books, pools and gas.

Lifetime: from t until the first later evaluation of the key (tradeable or not) whose net edge is <= 0;
censored at t + horizon, and at the end of the recording.

Streaming and bounded: call `advance(now)` before the engine applies each event (at time `now`), register
`on_market_event` and `on_evaluations` on the engine, `add` a sample when its signal is emitted, and `finish`
at the end. Only the pending samples (those younger than the horizon) are held.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.events import BookEvent, GasEvent, Level, MarketEvent, PoolEvent
from bot.risk.slippage import Side, swap
from strategies.base import Evaluation, OpportunityKey
from strategies.depth_walk import cost_of
from strategies.gas import gas_cost_native


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
    """Buying `filled` on the buy leg and selling it on the sell leg, in quote units."""

    filled: float
    cost: float
    proceeds: float
    fees: float
    """Taker fees of the book legs (a pool's fee is inside its swap)."""
    gas: float = 0.0
    """Gas of the transaction with the pool legs, quote units."""

    @property
    def pnl(self) -> float:
        return self.proceeds - self.cost - self.fees - self.gas

    @property
    def edge_bps(self) -> float:
        """PnL in bps of the buy notional (0 when nothing filled)."""
        return self.pnl / self.cost * 1e4 if self.cost > 0.0 else 0.0


Leg = Sequence[Level] | PoolEvent
"""Where a leg trades: a book side (asks to buy, bids to sell, best first) or a pool."""


def _holds(leg: Leg) -> float:
    """Return the base a leg can take: a book side's depth; a pool's is only known per swap (a swap reverts)."""
    return math.inf if isinstance(leg, PoolEvent) else sum(size for _, size in leg)


def _quote(leg: Leg, side: Side, size: float) -> float | None:
    """Return the quote paid (buy) or received (sell) for `size` on `leg`; None when a pool cannot pay it out."""
    if isinstance(leg, PoolEvent):
        cost = swap(leg, side, size)
        return None if cost is None else cost.avg_price * size
    quote = cost_of(leg, size)
    if quote is None:
        raise ValueError(f"a book holding {_holds(leg)} cannot fill {size}")  # callers stay within `_holds`
    return quote


def execute(buy: Leg, sell: Leg, size: float, buy_fee_bps: float, sell_fee_bps: float, gas: float = 0.0) -> Execution:
    """Buy `size` on `buy` and sell it on `sell`, both legs filling what the thinner book holds.

    Taker fees (bps) apply to book legs only: a pool's fee is inside its swap. `gas` (quote) is paid whatever
    fills; a swap that cannot pay out the size reverts the transaction, which then trades nothing.
    """
    filled = min(size, _holds(buy), _holds(sell))
    if filled <= 0.0:
        return Execution(0.0, 0.0, 0.0, 0.0, gas)
    cost, proceeds = _quote(buy, "buy", filled), _quote(sell, "sell", filled)
    if cost is None or proceeds is None:
        return Execution(0.0, 0.0, 0.0, 0.0, gas)
    buy_fee = 0.0 if isinstance(buy, PoolEvent) else cost * buy_fee_bps * 1e-4
    sell_fee = 0.0 if isinstance(sell, PoolEvent) else proceeds * sell_fee_bps * 1e-4
    return Execution(filled, cost, proceeds, buy_fee + sell_fee, gas)


def is_pool_leg(venue: str) -> bool:
    """Whether a venue of an opportunity key is a pool (`{dex}:{address}`); config venue names hold no colon."""
    return ":" in venue


@dataclass(frozen=True, slots=True)
class GasCharge:
    """What a sample's on-chain transaction burns: `units` of gas, at `token_price` quote per gas token (ETH)."""

    units: float
    token_price: float


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
    gas: GasCharge | None = None
    legs: dict[str, BookEvent | PoolEvent] = field(default_factory=dict)
    """The market each venue of the key executes on, once known."""
    gas_quote: float = 0.0


@dataclass(slots=True)
class _Block:
    number: int
    time: int
    """When its first gas or pool event was received (the replay clock)."""
    gas: GasEvent | None = None


@dataclass(slots=True)
class _Chain:
    """A chain's current block, its latest gas, and the samples whose pool legs wait for a block."""

    block: _Block | None = None
    gas: GasEvent | None = None
    waiting: deque[_Pending] = field(default_factory=deque)


class StreamingLabeler:
    """Label samples while a replay runs, holding only the pending ones (see the module docstring)."""

    def __init__(self, settings: LabelSettings) -> None:
        self.settings = settings
        self.labels: list[Label] = []
        self._books: dict[tuple[str, str], BookEvent] = {}
        self._pools: dict[str, PoolEvent] = {}
        self._chains: dict[str, _Chain] = {}
        self._executions: deque[_Pending] = deque()
        """Samples with a book leg, in time order, until t + latency."""
        self._lifetimes: deque[_Pending] = deque()
        self._open_by_key: dict[OpportunityKey, deque[_Pending]] = {}
        self._now = 0

    def on_market_event(self, event: MarketEvent) -> None:
        """Keep the latest accepted book per venue and symbol, pool per pool and gas per chain, and follow the
        chains' blocks (register on the engine)."""
        if isinstance(event, BookEvent):
            self._books[(event.venue, event.symbol)] = event
        elif isinstance(event, PoolEvent):
            self._on_block(event.chain, event.block)
            self._pools[f"{event.dex}:{event.pool}"] = event
        elif isinstance(event, GasEvent):
            chain = self._on_block(event.chain, event.block)
            chain.gas = event
            if chain.block is not None and chain.block.number == event.block:
                chain.block.gas = event

    def _on_block(self, name: str, number: int) -> _Chain:
        """An event of block `number` arrived: a later block than the current one completes the current one."""
        chain = self._chains.get(name)
        if chain is None:
            chain = self._chains[name] = _Chain()
        if chain.block is None or number > chain.block.number:
            if chain.block is not None:
                self._settle(chain, chain.block)
            chain.block = _Block(number, self._now)
        return chain

    def _settle(self, chain: _Chain, block: _Block | None) -> None:
        """Execute the pool legs whose block is `block` (complete now); None: the last state, at the end."""
        latency = self.settings.latency_ms
        gas = chain.gas if block is None or block.gas is None else block.gas  # a block without gas: the latest
        while chain.waiting and (block is None or chain.waiting[0].t + latency <= block.time):
            sample = chain.waiting.popleft()
            for venue in sample.key[2:]:
                if is_pool_leg(venue):
                    sample.legs[venue] = self._pools[venue]
            if sample.gas is not None and gas is not None:
                sample.gas_quote = gas_cost_native(gas, sample.gas.units) * sample.gas.token_price
            self._complete(sample)

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

    def add(self, key: OpportunityKey, t: int, size: float, gas: GasCharge | None = None) -> int:
        """Start labelling a sample seen at `t` (now); return its index in `labels`.

        A key with a pool leg needs `gas`, and its pools must have been seen (the engine's strategies saw them).
        """
        pools = [venue for venue in key[2:] if is_pool_leg(venue)]
        if pools and gas is None:
            raise ValueError(f"{key[0]} sample {key}: a pool leg needs its gas charge")
        unknown = [venue for venue in pools if venue not in self._pools]
        if unknown:
            raise ValueError(f"{key[0]} sample {key}: no pool event seen for {', '.join(unknown)}")
        sample = _Pending(len(self.labels), key, t, size, Label(), gas)
        self.labels.append(sample.label)
        if len(pools) < 2:
            self._executions.append(sample)
        if pools:
            chain = self._pools[pools[0]].chain
            self._chains.setdefault(chain, _Chain()).waiting.append(sample)
        self._lifetimes.append(sample)
        self._open_by_key.setdefault(key, deque()).append(sample)
        return sample.index

    def advance(self, now: int) -> None:
        """Time moves to `now`, before the event at `now` is applied: resolve what fell due before it."""
        self._now = now
        due = now - self.settings.latency_ms
        while self._executions and self._executions[0].t < due:
            self._take_books(self._executions.popleft())
        horizon = self.settings.horizon_ms
        while self._lifetimes and self._lifetimes[0].t + horizon < now:
            self._censor(self._lifetimes.popleft(), float(horizon))

    def finish(self, end_ms: int) -> None:
        """The recording ended at `end_ms`: execute against the last books, blocks and pools, and censor open
        lifetimes there."""
        while self._executions:
            self._take_books(self._executions.popleft())
        for chain in self._chains.values():
            self._settle(chain, chain.block)  # the last block is complete: no event of it is still to come
            self._settle(chain, None)  # no block came after t + latency: the chain as it was last seen
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

    def _take_books(self, sample: _Pending) -> None:
        """The sample's book legs execute now, on the books in force."""
        symbol = sample.key[1]
        for venue in sample.key[2:]:
            if not is_pool_leg(venue):
                sample.legs[venue] = self._books[(venue, symbol)]
        self._complete(sample)

    def _complete(self, sample: _Pending) -> None:
        """Execute the sample once every leg knows its market."""
        _, _, buy_venue, sell_venue = sample.key
        buy, sell = sample.legs.get(buy_venue), sample.legs.get(sell_venue)
        if buy is None or sell is None:
            return
        fee = self.settings.fee
        sample.label.execution = execute(
            buy if isinstance(buy, PoolEvent) else buy.asks,
            sell if isinstance(sell, PoolEvent) else sell.bids,
            sample.size,
            fee(buy_venue),
            fee(sell_venue),
            sample.gas_quote,
        )
