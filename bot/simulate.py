"""`arbbot simulate`: a recording straight from the market and chain simulators, on a simulated clock.

No network and no servers: the market simulator is stepped tick by tick (`ts = start_ms + tick × tick_ms`)
and, when the config has a chain with `local_pools`, the chain simulator mines a block every
`chain_block_time_s`. The same config (seed included), duration and start give the same events, and an
uncompressed file with the same bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.config import RootConfig, SimulatorConfig
from bot.events import BookEvent, TradeEvent
from bot.recording import RecordingWriter
from bot.sim.chain import ChainSimParams, ChainSimulator
from bot.sim.market import MarketSimulator

SIMULATION_EPOCH_MS = 1_763_700_000_000
"""Default start of the simulated clock (2025-11-21 04:40 UTC), fixed so that output is reproducible."""

_PROGRESS_EVERY_TICKS = 1_000


class SimulateError(ValueError):
    """A config or argument `simulate` cannot work with; the message says what to change."""


@dataclass(slots=True)
class SimulateSummary:
    """What a simulation wrote."""

    books: int = 0
    trades: int = 0
    gas: int = 0
    pools: int = 0
    ticks: int = 0
    blocks: int = 0
    rejected: int = 0
    start_ms: int = 0
    end_ms: int = 0

    @property
    def events(self) -> int:
        """Return the number of events written."""
        return self.books + self.trades + self.gas + self.pools


def _market_simulator(config: RootConfig) -> MarketSimulator:
    if config.simulator is None:
        raise SimulateError("the config has no simulator section (config/demo.yaml has one to copy)")
    venues = {name: config.symbols_of(name) for name, venue in config.venues.items() if venue.simulated}
    if not venues:
        raise SimulateError("the config has no simulated venues: mark venues `simulated: true`")
    return MarketSimulator(config.simulator, venues)


def chain_sim_params(sim: SimulatorConfig) -> ChainSimParams:
    """Return the chain simulator's parameters: the mainnet defaults with the simulator section's `gas_*` overrides."""
    params = ChainSimParams()
    if sim.gas_demand_base_fee_gwei is not None:
        params = dataclasses.replace(params, demand_base_fee_gwei=sim.gas_demand_base_fee_gwei)
    if sim.gas_burst_probability is not None:
        params = dataclasses.replace(params, burst_probability=sim.gas_burst_probability)
    if sim.gas_burst_continue is not None:
        params = dataclasses.replace(params, burst_continue=sim.gas_burst_continue)
    return params


def _chain_simulator(config: RootConfig, market: MarketSimulator, block_time_s: float | None) -> ChainSimulator | None:
    chain = config.chain
    if chain is None or not chain.local_pools:
        return None
    unpriced = sorted({p.symbol for p in chain.local_pools} - set(market.symbols))
    if unpriced:
        raise SimulateError(f"chain.local_pools: {unpriced} are not traded by any simulated venue, so have no price")
    params = chain_sim_params(market.config)
    if block_time_s is not None:
        if not block_time_s > 0.0:
            raise SimulateError(f"the chain block time must be > 0 s, got {block_time_s}")
        params = dataclasses.replace(params, block_time_s=block_time_s)
    return ChainSimulator(chain, market.config.seed, params)


def simulate(
    config: RootConfig,
    duration_s: float,
    out: Path,
    start_ms: int | None = None,
    *,
    chain_block_time_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulateSummary:
    """Write `duration_s` of simulated books, trades, gas and pools to `out`, in time order.

    `chain_block_time_s` defaults to `ChainSimParams.block_time_s` (12 s); `progress` is called with
    (ticks done, total ticks) now and then. Raise SimulateError for a config it cannot simulate.
    """
    if not duration_s > 0.0:
        raise SimulateError(f"the duration must be > 0 s, got {duration_s}")
    market = _market_simulator(config)
    chain = _chain_simulator(config, market, chain_block_time_s)
    start = SIMULATION_EPOCH_MS if start_ms is None else start_ms
    tick_ms = market.config.tick_ms
    end = start + round(duration_s * 1_000.0)
    total_ticks = (end - start) // tick_ms
    block_ms = max(1, round(chain.params.block_time_s * 1_000.0)) if chain is not None else 0
    next_block = start + block_ms
    summary = SimulateSummary(start_ms=start, end_ms=end)
    depth = config.book_depth

    with RecordingWriter(out) as writer:

        def mine_until(ts: int, inclusive: bool) -> None:
            # Blocks use the fair prices of the last tick at or before their time.
            nonlocal next_block
            while chain is not None and (next_block < ts or (inclusive and next_block == ts)):
                fair = {symbol: market.fair_price(symbol) for symbol in market.symbols}
                gas, pools = chain.step(next_block, fair)
                writer.write(gas)
                for pool in pools:
                    writer.write(pool)
                summary.blocks += 1
                summary.gas += 1
                summary.pools += len(pools)
                next_block += block_ms

        for tick in range(1, total_ticks + 1):
            ts = start + tick * tick_ms
            mine_until(ts, inclusive=False)
            for book in market.step():
                try:
                    event = BookEvent.from_levels(book.venue, book.symbol, ts, book.bids[:depth], book.asks[:depth], ts)
                except ValueError:
                    summary.rejected += 1
                    continue
                writer.write(event)
                summary.books += 1
                for trade in book.trades:
                    writer.write(
                        TradeEvent(
                            venue=book.venue,
                            symbol=book.symbol,
                            ts=ts,
                            recv_ts=ts,
                            price=trade.price,
                            size=trade.size,
                            side="buy" if trade.side == "buy" else "sell",
                        )
                    )
                    summary.trades += 1
            mine_until(ts, inclusive=True)
            summary.ticks = tick
            if progress is not None and tick % _PROGRESS_EVERY_TICKS == 0:
                progress(tick, total_ticks)
        mine_until(end, inclusive=True)
    if progress is not None:
        progress(summary.ticks, total_ticks)
    return summary
