"""DEX-DEX arbitrage: buy the base on one constant-product pool, sell it on another, after both pool fees and gas.

Both legs go through constant-product maths with the fee taken from the amount in (Uniswap V2, and V3 within the
current tick range, as its virtual reserves). Buying base for q quote on pool A (reserves x_A base, y_A quote,
fee f_A, γ_A = 1 - f_A) gives s = x_A·γ_A·q / (y_A + γ_A·q) base; selling s on pool B gives
y_B·γ_B·s / (x_B + γ_B·s) quote. Composed, the quote back for q quote in is

    out(q) = a·q / (b + c·q),  a = γ_A·γ_B·x_A·y_B,  b = x_B·y_A,  c = γ_A·(x_B + γ_B·x_A),

so the profit out(q) - q is concave, its derivative a·b/(b + c·q)² - 1 is zero at q* = (√(a·b) - b) / c, and it is
positive somewhere iff a > b (the sell pool's price after both fees beats the buy pool's). Gas is a constant per
trade, so it moves no optimum: it only decides whether the best size pays. With a cap, the best size is min(q*, cap).

A V3 pool's virtual reserves hold only within its current tick range: a size that crosses an initialised tick meets
different liquidity, so large sizes are approximate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.events import GasEvent, PoolEvent
from strategies.amm import amount_out
from strategies.base import Evaluation
from strategies.gas import gas_cost_native

"""Native units (ETH) per gwei."""


@dataclass(frozen=True, slots=True)
class DexDexConfig:
    """Thresholds and gas of the dex_dex strategy.

    `gas_units_per_swap` defaults to 120,000: a Uniswap V3 swap costs some 90-130k gas (more when it crosses
    ticks), and the two-swap transaction's own 21,000 is folded in.
    """

    min_net_edge_bps: float = 1.0
    max_notional: float = 50_000.0
    """Cap on the quote spent on the buy leg (fee included)."""
    gas_units_per_swap: int = 120_000
    chain: str = "ethereum"
    native: str = "ETH"
    """The chain's gas asset, as it appears in canonical symbols."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_notional) and self.max_notional > 0.0):
            raise ValueError(f"max_notional must be a finite number > 0, got {self.max_notional}")
        if self.gas_units_per_swap <= 0:
            raise ValueError(f"gas_units_per_swap must be > 0, got {self.gas_units_per_swap}")


class PoolMarketView(Protocol):
    """Read-only on-chain market state: the latest pools of a symbol and the latest gas of a chain."""

    def pools_for(self, symbol: str) -> Iterable[PoolEvent]: ...

    def gas(self, chain: str) -> GasEvent | None: ...


@dataclass(frozen=True, slots=True)
class Cycle:
    """Quote in on the buy pool, base through, quote out of the sell pool, before gas."""

    quote_in: float
    base: float
    quote_out: float
    buy_fee: float
    """The buy pool's fee, quote units."""
    sell_fee: float
    """The sell pool's fee, quote units (charged in base, valued at the sell leg's average price)."""

    @property
    def profit(self) -> float:
        return self.quote_out - self.quote_in


def venue_name(pool: PoolEvent) -> str:
    """Name a pool as a venue: `<dex>:<address>`."""
    return f"{pool.dex}:{pool.pool}"


def cycle(buy: PoolEvent, sell: PoolEvent, quote_in: float) -> Cycle:
    """Buy base on `buy` for `quote_in` quote and sell all of it on `sell`."""
    buy_fee, sell_fee = buy.fee_bps / 1e4, sell.fee_bps / 1e4
    base = amount_out(buy.reserve_quote, buy.reserve_base, quote_in, buy.fee_bps)
    quote_out = amount_out(sell.reserve_base, sell.reserve_quote, base, sell.fee_bps)
    return Cycle(quote_in, base, quote_out, quote_in * buy_fee, quote_out * sell_fee / (1.0 - sell_fee))


def optimal_quote_in(buy: PoolEvent, sell: PoolEvent, cap: float = math.inf) -> float:
    """Return the quote amount in on `buy` that maximises the cycle's profit, at most `cap`; 0 when nothing pays."""
    gamma_buy, gamma_sell = 1.0 - buy.fee_bps / 1e4, 1.0 - sell.fee_bps / 1e4
    a = gamma_buy * gamma_sell * buy.reserve_base * sell.reserve_quote
    b = sell.reserve_base * buy.reserve_quote
    c = gamma_buy * (sell.reserve_base + gamma_sell * buy.reserve_base)
    if a <= b:
        return 0.0
    # (√(ab) - b)/c rewritten without subtracting two close numbers: √(ab) - b = (a - b)/(√(a/b) + 1).
    return min((a - b) / (c * (math.sqrt(a / b) + 1.0)), cap)


class DexDexStrategy:
    """Evaluate every other pool of the updated pool's symbol on the same chain, both directions."""

    kind = "dex_dex"

    def __init__(self, config: DexDexConfig) -> None:
        self._config = config

    def on_pool(self, market: PoolMarketView, pool: PoolEvent) -> list[Evaluation]:
        """Re-evaluate the pairs `pool` belongs to; nothing without a gas price for the chain (gas is never 0)."""
        config = self._config
        if pool.chain != config.chain:
            return []
        gas = market.gas(config.chain)
        if gas is None:
            return []
        others = [
            other for other in market.pools_for(pool.symbol) if other.chain == pool.chain and other.pool != pool.pool
        ]
        if not others:
            return []
        native_price = self._native_price(market, pool)
        if native_price is None:
            return []
        gas_quote = gas_cost_native(gas, 2 * config.gas_units_per_swap) * native_price
        evaluations = []
        for other in others:
            evaluations.append(self.evaluate(other, pool, gas, gas_quote, pool.ts))
            evaluations.append(self.evaluate(pool, other, gas, gas_quote, pool.ts))
        return evaluations

    def evaluate(self, buy: PoolEvent, sell: PoolEvent, gas: GasEvent, gas_quote: float, ts: int) -> Evaluation:
        """Size the trade buying base on `buy` and selling it on `sell` for the most profit after `gas_quote`."""
        quote_in = optimal_quote_in(buy, sell, self._config.max_notional)
        trade = cycle(buy, sell, quote_in) if quote_in > 0.0 else None
        if trade is None or trade.profit - gas_quote <= 0.0:
            # Nothing pays after gas: report the marginal prices and the marginal edge after both pool fees (at size
            # 0 gas has no per-unit value), so a closing signal shows the pools that closed the gap.
            buy_price, sell_price = buy.price, sell.price
            size, fees = 0.0, 0.0
            gross_edge_bps = (sell_price - buy_price) / buy_price * 1e4
            marginal_in = buy_price / (1.0 - buy.fee_bps / 1e4)
            marginal_out = sell_price * (1.0 - sell.fee_bps / 1e4)
            net_edge_bps = (marginal_out - marginal_in) / buy_price * 1e4
            tradeable = False
        else:
            size, fees = trade.base, trade.buy_fee + trade.sell_fee
            # Average prices before fees: what reached each pool, so that cost = size·buy_price + buy_fee and
            # proceeds = size·sell_price - sell_fee, as for a taker on a book.
            buy_price = (trade.quote_in - trade.buy_fee) / size
            sell_price = (trade.quote_out + trade.sell_fee) / size
            gross_edge_bps = (sell_price - buy_price) / buy_price * 1e4
            net_edge_bps = (trade.profit - gas_quote) / (size * buy_price) * 1e4
            tradeable = net_edge_bps >= self._config.min_net_edge_bps
        return Evaluation(
            kind=self.kind,
            symbol=buy.symbol,
            buy_venue=venue_name(buy),
            sell_venue=venue_name(sell),
            ts=ts,
            buy_book_ts=buy.ts,
            sell_book_ts=sell.ts,
            size=size,
            buy_price=buy_price,
            sell_price=sell_price,
            gross_edge_bps=gross_edge_bps,
            net_edge_bps=net_edge_bps,
            fees=fees,
            tradeable=tradeable,
            gas=gas_quote,
            base_fee_gwei=gas.base_fee_gwei,
            priority_fee_gwei=gas.priority_fee_gwei,
        )

    def _native_price(self, market: PoolMarketView, pool: PoolEvent) -> float | None:
        """Return the chain's native asset in `pool`'s quote: 1, the pool's own price, or a NATIVE/quote pool's."""
        native = self._config.native
        if pool.quote == native:
            return 1.0
        if pool.base == native:
            return pool.price
        pools = [other for other in market.pools_for(f"{native}/{pool.quote}") if other.chain == pool.chain]
        return max(pools, key=lambda other: other.block).price if pools else None
