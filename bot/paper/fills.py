"""Pure leg simulation: a taker order walking a book, a constant-product swap with gas and a revert on tolerance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.events import GasEvent, PoolEvent
from strategies.amm import buy_base_cost, marginal_buy_price, marginal_sell_price, sell_base_proceeds
from strategies.gas import ETH_PER_GWEI

Side = Literal["buy", "sell"]
LegStatus = Literal["filled", "partial", "missed", "reverted"]
Levels = Sequence[tuple[float, float]]

_EPS = 1e-12
"""Relative slack for float comparisons of sizes and prices (a size taken down to 1e-12 of itself is whole)."""


@dataclass(frozen=True, slots=True)
class LegResult:
    """What one leg did. `notional` is the quote exchanged before fees; `fee` is a taker fee in quote units
    (zero on a pool, whose fee is inside its price); `gas_native` is the gas paid in the chain's native asset."""

    venue: str
    side: Side
    requested: float
    size: float
    notional: float
    fee: float
    gas_native: float
    status: LegStatus
    market_ts: int
    reason: str = ""

    @property
    def price(self) -> float:
        """Average price of what filled (0.0 when nothing did)."""
        return self.notional / self.size if self.size > 0.0 else 0.0

    @property
    def base_delta(self) -> float:
        """Base units this leg added to the account (negative for a sell)."""
        return self.size if self.side == "buy" else -self.size

    @property
    def quote_delta(self) -> float:
        """Quote units this leg added to the account, fee included (negative for a buy)."""
        return -self.notional - self.fee if self.side == "buy" else self.notional - self.fee


def missed(venue: str, side: Side, requested: float, market_ts: int, reason: str) -> LegResult:
    """A leg that never reached the market: nothing filled, nothing paid."""
    return LegResult(venue, side, requested, 0.0, 0.0, 0.0, 0.0, "missed", market_ts, reason)


def _status(requested: float, size: float) -> LegStatus:
    if size <= 0.0:
        return "missed"
    return "filled" if size >= requested * (1.0 - _EPS) else "partial"


def walk_book(
    venue: str,
    side: Side,
    levels: Levels,
    size: float,
    fee_rate: float,
    market_ts: int,
    limit_price: float | None = None,
) -> LegResult:
    """Take up to `size` from `levels` (asks to buy, bids to sell, best first) as an immediate-or-cancel taker
    order: level by level, never past `limit_price`, paying `fee_rate` (a fraction) on the notional."""
    remaining = size
    notional = 0.0
    for price, available in levels:
        if remaining <= size * _EPS:
            break
        if limit_price is not None and (
            price > limit_price * (1.0 + _EPS) if side == "buy" else price < limit_price * (1.0 - _EPS)
        ):
            break
        take = min(available, remaining)
        notional += take * price
        remaining -= take
    filled = size if remaining <= size * _EPS else size - remaining
    status = _status(size, filled)
    reason = "" if status == "filled" else ("limit" if limit_price is not None else "depth")
    return LegResult(venue, side, size, filled, notional, notional * fee_rate, 0.0, status, market_ts, reason)


@dataclass(frozen=True, slots=True)
class GasPlan:
    """The gas a transaction was sent with (EIP-1559): the most it pays per gas, and the tip it offers."""

    max_fee_gwei: float
    priority_fee_gwei: float


def gas_price_gwei(block: GasEvent, plan: GasPlan | None) -> float | None:
    """The effective gas price of a transaction in `block`; None when the block's base fee is above the plan's
    max fee (the transaction is not included). Without a plan, the block's base fee plus its median tip."""
    if plan is None:
        return block.base_fee_gwei + block.priority_fee_gwei
    if block.base_fee_gwei > plan.max_fee_gwei:
        return None
    return min(plan.max_fee_gwei, block.base_fee_gwei + plan.priority_fee_gwei)


def swap(
    venue: str,
    side: Side,
    pool: PoolEvent,
    size: float,
    gas_native: float,
    market_ts: int,
    limit_price: float | None = None,
) -> LegResult:
    """Swap exactly `size` base in (sell) or out (buy) of `pool`, paying `gas_native` either way.

    The swap reverts (gas paid, nothing traded) when its average price is worse than `limit_price` (the
    amountInMax / amountOutMin a router checks) or when the pool cannot pay `size` out.
    """
    if side == "buy":
        if size >= pool.reserve_base:
            return LegResult(venue, side, size, 0.0, 0.0, 0.0, gas_native, "reverted", market_ts, "liquidity")
        notional = buy_base_cost(pool, size)
        worse = limit_price is not None and notional > size * limit_price * (1.0 + _EPS)
    else:
        notional = sell_base_proceeds(pool, size)
        worse = limit_price is not None and notional < size * limit_price * (1.0 - _EPS)
    if worse:
        return LegResult(venue, side, size, 0.0, 0.0, 0.0, gas_native, "reverted", market_ts, "tolerance")
    return LegResult(venue, side, size, size, notional, 0.0, gas_native, "filled", market_ts)


def pool_reference_price(pool: PoolEvent, side: Side) -> float:
    """The price a swap's slippage is measured from: the zero-size price with the pool's fee (spot ÷ (1 − fee) to
    buy, spot × (1 − fee) to sell), as risk predicts it (bot/risk/slippage.py `swap`), so both are price impact."""
    return marginal_buy_price(pool, 0.0) if side == "buy" else marginal_sell_price(pool, 0.0)


def gas_native(gas_units: float, price_gwei: float) -> float:
    """Native-asset cost of `gas_units` at `price_gwei`."""
    return gas_units * price_gwei * ETH_PER_GWEI
