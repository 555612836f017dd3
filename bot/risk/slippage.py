"""Slippage of one leg: walk a book for a size, or price a constant-product swap with its fee."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.events import PoolEvent
from strategies import amm

Side = Literal["buy", "sell"]
Levels = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class LegCost:
    """A leg's expected average price at `size` and its slippage in bps of the leg's best (zero-size) price."""

    size: float
    avg_price: float
    best_price: float
    worst_price: float

    @property
    def slippage_bps(self) -> float:
        """Never negative: a buy pays at least the best ask, a sell gets at most the best bid."""
        if self.avg_price >= self.best_price:
            return (self.avg_price - self.best_price) / self.best_price * 1e4
        return (self.best_price - self.avg_price) / self.best_price * 1e4


def walk_book(levels: Levels, size: float) -> LegCost | None:
    """Take `size` from `levels` (asks for a buy, bids for a sell; best first); None if too thin or size <= 0."""
    if size <= 0.0 or not levels:
        return None
    remaining = size
    total = 0.0
    worst = levels[0][0]
    for price, available in levels:
        take = min(available, remaining)
        total += take * price
        remaining -= take
        worst = price
        if remaining <= size * 1e-12:
            avg = total / size
            best = levels[0][0]
            # Rounding can put the average a hair outside [best, worst]; the maths says it is inside.
            low, high = min(best, worst), max(best, worst)
            return LegCost(size, min(max(avg, low), high), best, worst)
    return None


def swap(pool: PoolEvent, side: Side, size: float) -> LegCost | None:
    """Buy or sell `size` base through `pool`, fee included (Uniswap V2 maths); None if the pool cannot.

    The average price includes the pool's fee; the best price is the zero-size marginal price with the fee
    (spot ÷ (1 − fee) for a buy, spot × (1 − fee) for a sell), so the slippage is the price impact alone.
    """
    if size <= 0.0:
        return None
    if side == "buy":
        if size >= pool.reserve_base:
            return None
        quote = amm.buy_base_cost(pool, size)
        best, worst = amm.marginal_buy_price(pool, 0.0), amm.marginal_buy_price(pool, size)
    else:
        quote = amm.sell_base_proceeds(pool, size)
        best, worst = amm.marginal_sell_price(pool, 0.0), amm.marginal_sell_price(pool, size)
    avg = quote / size
    low, high = min(best, worst), max(best, worst)
    return LegCost(size, min(max(avg, low), high), best, worst)
