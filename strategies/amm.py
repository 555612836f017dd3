"""Constant-product (Uniswap V2) pool maths with the fee, in token units.

The fee is taken from the input, as Uniswap V2 does: with g = 1 - fee, a swap of `x` in pays
`x·g·R_out / (R_in + x·g)` out. Functions of one swap are exact in real arithmetic; the contract rounds the
output down to whole raw units, which is below any float's resolution at realistic reserves.
"""

from __future__ import annotations

import math

from bot.events import PoolEvent


def _keep(fee_bps: float) -> float:
    """Fraction of the input that trades after the fee (0.997 for 30 bps)."""
    return 1.0 - fee_bps / 1e4


def amount_out(reserve_in: float, reserve_out: float, amount_in: float, fee_bps: float) -> float:
    """Return what a swap of `amount_in` pays out (Uniswap V2 getAmountOut, unrounded)."""
    traded = amount_in * _keep(fee_bps)
    return traded * reserve_out / (reserve_in + traded)


def amount_in_for(reserve_in: float, reserve_out: float, amount_out: float, fee_bps: float) -> float:
    """Return the input a swap needs to pay out `amount_out` (Uniswap V2 getAmountIn, unrounded).

    ValueError when `amount_out` is not less than `reserve_out`: no input buys the whole reserve.
    """
    if amount_out >= reserve_out:
        raise ValueError(f"cannot take {amount_out} out of a reserve of {reserve_out}")
    return reserve_in * amount_out / ((reserve_out - amount_out) * _keep(fee_bps))


def marginal_out(reserve_in: float, reserve_out: float, amount_in: float, fee_bps: float) -> float:
    """Return d(out)/d(in) at `amount_in`: what the next unit of input of the same swap pays out.

    This is the swap's marginal price after `amount_in`; it is not the pool's spot price after the swap,
    which is a little higher because the fee stays in the pool's reserves.
    """
    keep = _keep(fee_bps)
    return keep * reserve_in * reserve_out / (reserve_in + keep * amount_in) ** 2


def marginal_in(reserve_in: float, reserve_out: float, amount_out: float, fee_bps: float) -> float:
    """Return d(in)/d(out) at `amount_out`: the input the next unit of output of the same swap costs."""
    return reserve_in * reserve_out / (_keep(fee_bps) * (reserve_out - amount_out) ** 2)


# ---------------------------------------------------------------- base and quote of a pool


def buy_base_cost(pool: PoolEvent, base_out: float) -> float:
    """Return the quote a swap needs to take `base_out` of base from the pool, fee included."""
    return amount_in_for(pool.reserve_quote, pool.reserve_base, base_out, pool.fee_bps)


def sell_base_proceeds(pool: PoolEvent, base_in: float) -> float:
    """Return the quote a swap of `base_in` of base into the pool pays, after the fee."""
    return amount_out(pool.reserve_base, pool.reserve_quote, base_in, pool.fee_bps)


def base_for_quote(pool: PoolEvent, quote_in: float) -> float:
    """Return the base a swap of `quote_in` of quote buys from the pool."""
    return amount_out(pool.reserve_quote, pool.reserve_base, quote_in, pool.fee_bps)


def marginal_buy_price(pool: PoolEvent, base_out: float) -> float:
    """Return the quote per base of the next unit bought once `base_out` has been bought in the same swap."""
    return marginal_in(pool.reserve_quote, pool.reserve_base, base_out, pool.fee_bps)


def marginal_sell_price(pool: PoolEvent, base_in: float) -> float:
    """Return the quote per base of the next unit sold once `base_in` has been sold in the same swap."""
    return marginal_out(pool.reserve_base, pool.reserve_quote, base_in, pool.fee_bps)


def buy_size_at_price(pool: PoolEvent, price: float) -> float:
    """Return the base bought when the marginal buy price reaches `price` (<= 0 if it starts above it)."""
    # Solve R_q·R_b / (g·(R_b - b)²) = price for b. R_b - √(R_q·R_b / (g·price)) is written as a quotient
    # so that a small b does not come out as the difference of two nearly equal reserves.
    base, quote, keep = pool.reserve_base, pool.reserve_quote, _keep(pool.fee_bps)
    root = math.sqrt(quote * base / (keep * price))
    return base * (base - quote / (keep * price)) / (base + root)


def sell_size_at_price(pool: PoolEvent, price: float) -> float:
    """Return the base sold when the marginal sell price falls to `price` (<= 0 if it starts below it)."""
    # Solve g·R_b·R_q / (R_b + g·b)² = price for b, again without subtracting nearly equal numbers.
    base, quote, keep = pool.reserve_base, pool.reserve_quote, _keep(pool.fee_bps)
    root = math.sqrt(keep * base * quote / price)
    return base * (keep * quote / price - base) / (keep * (root + base))
