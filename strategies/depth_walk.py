"""Depth walks: what a taker pays or receives for a size, and the size where a cross-venue edge runs out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Levels = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class CrossWalk:
    """Result of walking a buy book's asks against a sell book's bids."""

    size: float
    buy_cost: float
    sell_proceeds: float
    fees: float

    @property
    def buy_vwap(self) -> float:
        return self.buy_cost / self.size

    @property
    def sell_vwap(self) -> float:
        return self.sell_proceeds / self.size

    @property
    def net_profit(self) -> float:
        return self.sell_proceeds - self.buy_cost - self.fees

    @property
    def gross_edge_bps(self) -> float:
        return (self.sell_proceeds - self.buy_cost) / self.buy_cost * 1e4

    @property
    def net_edge_bps(self) -> float:
        return self.net_profit / self.buy_cost * 1e4


def walk_cross(asks: Levels, bids: Levels, buy_fee: float, sell_fee: float, max_notional: float) -> CrossWalk | None:
    """Take size level by level while the next unit's net edge (after both taker fees) is positive.

    `asks` are the buy venue's asks and `bids` the sell venue's bids, best first; fees are fractions
    (0.001 = 10 bps). The buy notional is capped at `max_notional`. None when not even the first unit pays.
    """
    i = j = 0
    ask_left = asks[0][1] if asks else 0.0
    bid_left = bids[0][1] if bids else 0.0
    size = cost = proceeds = 0.0
    while i < len(asks) and j < len(bids):
        ask_price, bid_price = asks[i][0], bids[j][0]
        if bid_price * (1.0 - sell_fee) <= ask_price * (1.0 + buy_fee):
            break
        take = min(ask_left, bid_left)
        room = max_notional - cost
        capped = take * ask_price >= room
        if capped:
            take = room / ask_price
        size += take
        cost += take * ask_price
        proceeds += take * bid_price
        if capped:
            break
        ask_left -= take
        bid_left -= take
        if ask_left <= 0.0:
            i += 1
            ask_left = asks[i][1] if i < len(asks) else 0.0
        if bid_left <= 0.0:
            j += 1
            bid_left = bids[j][1] if j < len(bids) else 0.0
    if size <= 0.0:
        return None
    return CrossWalk(size, cost, proceeds, cost * buy_fee + proceeds * sell_fee)


def cost_of(levels: Levels, size: float) -> float | None:
    """Quote amount to take `size` from `levels` (best first); None if the book is too thin."""
    remaining = size
    total = 0.0
    for price, available in levels:
        take = min(available, remaining)
        total += take * price
        remaining -= take
        if remaining <= size * 1e-12:
            return total
    return None
