"""Sizing: the size that maximises expected PnL, on the venues' lot, tick and minimum notional."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from bot.risk.slippage import LegCost

LegPricer = Callable[[float], LegCost | None]
"""Size → the leg's average price at that size (None when the book or pool cannot take it)."""


def round_size(size: float, lot: float) -> float:
    """Round `size` down to a whole number of lots (exact in decimal, so 3 × 0.1 is 0.3)."""
    if size <= 0.0:
        return 0.0
    lots = math.floor(size / lot * (1.0 + 1e-12))
    return float(Decimal(repr(lot)) * lots)


def round_price(price: float, tick: float, side: Literal["buy", "sell"]) -> float:
    """A limit price on the tick grid, never tighter than `price`: up for a buy, down for a sell."""
    ticks = price / tick
    whole = math.ceil(ticks * (1.0 - 1e-12)) if side == "buy" else math.floor(ticks * (1.0 + 1e-12))
    return float(Decimal(repr(tick)) * whole)


@dataclass(frozen=True, slots=True)
class SizingInputs:
    """What sizing needs about one signal (fees as fractions of notional; pool legs carry their fee in the price)."""

    probability: float
    buy: LegPricer
    sell: LegPricer
    buy_fee: float
    sell_fee: float
    fixed_cost: float
    inventory_cost: Callable[[float, float, float], float]
    """(size, buy avg price, sell avg price) → quote cost of moving balances away from target (may be < 0)."""
    lot: float
    min_notional: float
    cap: float
    """Largest size allowed by every limit, in base units."""
    hint: float = 0.0
    """A size worth trying exactly (the signal's own)."""
    max_buy_quote: float | None = None
    """Quote the buy leg may spend, its fee included (the account's balance); None: no limit."""


@dataclass(frozen=True, slots=True)
class SizeChoice:
    """The best size found, its legs and expected PnL (quote)."""

    size: float
    buy: LegCost
    sell: LegCost
    expected_pnl: float
    edge: float
    costs: float


def expected_pnl(inputs: SizingInputs, size: float) -> SizeChoice | None:
    """E[PnL] = p × edge(size) − costs(size): edge before fees, costs = fees + fixed (gas) + inventory."""
    buy, sell = inputs.buy(size), inputs.sell(size)
    if buy is None or sell is None:
        return None
    edge = size * (sell.avg_price - buy.avg_price)
    fees = size * (buy.avg_price * inputs.buy_fee + sell.avg_price * inputs.sell_fee)
    costs = fees + inputs.fixed_cost + inputs.inventory_cost(size, buy.avg_price, sell.avg_price)
    return SizeChoice(size, buy, sell, inputs.probability * edge - costs, edge, costs)


def candidate_sizes(lot: float, cap: float, hint: float, count: int) -> list[float]:
    """Whole-lot sizes from one lot to `cap`, geometrically spaced, plus `hint` when it fits."""
    top = round_size(cap, lot)
    if top < lot:
        return []
    sizes = {top, lot}
    if count > 2 and top > lot:
        ratio = (top / lot) ** (1.0 / (count - 1))
        sizes.update(round_size(lot * ratio**i, lot) for i in range(1, count - 1))
    if lot <= hint <= cap:
        sizes.add(round_size(hint, lot))
    return sorted(s for s in sizes if s >= lot)


def affordable_size(inputs: SizingInputs) -> float | None:
    """The largest whole-lot size up to the cap whose buy leg costs at most `max_buy_quote` (fee included), found
    by bisection (the cost grows with size); None without a quote limit."""
    budget = inputs.max_buy_quote
    if budget is None:
        return None

    def fits(size: float) -> bool:
        leg = inputs.buy(size)
        return leg is not None and size * leg.avg_price * (1.0 + inputs.buy_fee) <= budget * (1.0 + 1e-12)

    top = round_size(inputs.cap, inputs.lot)
    if top < inputs.lot or fits(top):
        return top
    low, high = 0.0, top
    for _ in range(60):
        middle = (low + high) / 2.0
        if fits(middle):
            low = middle
        else:
            high = middle
    return round_size(low, inputs.lot)


def choose_size(inputs: SizingInputs, count: int) -> tuple[SizeChoice | None, str | None]:
    """The candidate with the highest expected PnL that meets every leg's minimum notional.

    A candidate whose buy leg costs more than `max_buy_quote` is left out, and the largest that does not is
    tried too (a trade is sized down to what the balance pays). Returns (choice, None), or
    (None, reason) with reason `size_cap` (no whole lot fits the limits), `no_liquidity` (no candidate could be
    priced), `insufficient_balance` (every priced candidate costs more than `max_buy_quote`) or
    `below_min_notional`.
    """
    sizes = candidate_sizes(inputs.lot, inputs.cap, inputs.hint, count)
    if not sizes:
        return None, "size_cap"
    affordable = affordable_size(inputs)
    if affordable is not None and affordable >= inputs.lot and affordable not in sizes:
        sizes = sorted([*sizes, affordable])
    best: SizeChoice | None = None
    priced = paid = False
    for size in sizes:
        choice = expected_pnl(inputs, size)
        if choice is None:
            continue
        priced = True
        spend = size * choice.buy.avg_price * (1.0 + inputs.buy_fee)
        if inputs.max_buy_quote is not None and spend > inputs.max_buy_quote * (1.0 + 1e-12):
            continue
        paid = True
        notional = size * min(choice.buy.avg_price, choice.sell.avg_price)
        if notional < inputs.min_notional:
            continue
        if best is None or choice.expected_pnl > best.expected_pnl:
            best = choice
    if best is None:
        if not priced:
            return None, "no_liquidity"
        return None, "below_min_notional" if paid else "insufficient_balance"
    return best, None
