"""CEX-DEX arbitrage: one leg on a centralised exchange's book, the other a swap on a constant-product pool.

Net profit = proceeds - cost - CEX taker fee - gas, the pool fee being inside the swap's amounts. The book's
marginal price is constant within a level and the pool's moves continuously with size, so the marginal net
edge falls as size grows and the profit is concave in size: the best size is where the marginal net edge
reaches zero, found exactly, level by level, by a closed form. Gas does not depend on size, so it does not
move that size; it only decides whether the trade pays at all. Without a gas price for the chain nothing is
evaluated: zero gas is never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from bot.events import BookEvent, GasEvent, PoolEvent
from strategies import amm
from strategies.base import Evaluation, MarketView, OpportunityKey
from strategies.gas import gas_cost_native

Levels = Sequence[tuple[float, float]]

UNISWAP_V2_SWAP_GAS = 110_000
"""Gas of one single-hop Uniswap V2 swap through the router: 21,000 for the transaction and about 90,000
for the router call, the pair's swap (two ERC-20 transfers, the reserves' storage update) and the calldata;
such swaps measure 100,000-130,000 on mainnet. The CEX leg costs no gas, so a trade pays this once."""


class ChainMarketView(MarketView, Protocol):
    """The market view plus the chain: gas per chain and pools per symbol (`MarketState` is one)."""

    def gas(self, chain: str) -> GasEvent | None: ...

    def pools_for(self, symbol: str) -> list[PoolEvent]: ...


@dataclass(frozen=True, slots=True)
class CexDexEvaluation:
    """An evaluation with a pool leg, and the gas and pool state it assumed."""

    evaluation: Evaluation
    gas_quote: float
    base_fee_gwei: float
    priority_fee_gwei: float
    pool_block: int

    @property
    def key(self) -> OpportunityKey:
        return self.evaluation.key

    @property
    def tradeable(self) -> bool:
        return self.evaluation.tradeable


@dataclass(frozen=True, slots=True)
class CexDexTrade:
    """A sized trade between a book side and a pool, in quote units, before gas.

    `buy_cost` and `sell_proceeds` are before every fee (the pool leg as if its fee were 0), so that
    profit = sell_proceeds - buy_cost - cex_fee - pool_fee is what the two legs really make.
    """

    size: float
    buy_cost: float
    sell_proceeds: float
    cex_fee: float
    pool_fee: float

    @property
    def fees(self) -> float:
        return self.cex_fee + self.pool_fee

    @property
    def profit(self) -> float:
        return self.sell_proceeds - self.buy_cost - self.fees


def _walk(
    levels: Levels, adjust: float, crossing: Callable[[float], float], size_cap: float, notional_cap: float
) -> tuple[float, float]:
    """Take book levels while the pool's marginal price still beats the level's; return (size, notional).

    `adjust` turns a level price into the price the pool must beat (1 + fee on asks, 1 - fee on bids);
    `crossing(price)` is the size at which the pool's marginal price reaches that price.
    """
    size = notional = 0.0
    for price, available in levels:
        if size >= size_cap or notional >= notional_cap:
            break
        level_end = size + available
        end = min(level_end, size_cap, size + (notional_cap - notional) / price, max(crossing(price * adjust), size))
        notional += (end - size) * price
        size = end
        if end < level_end:
            break
    return size, notional


def buy_cex_sell_pool(asks: Levels, pool: PoolEvent, cex_fee: float, max_notional: float) -> CexDexTrade:
    """Size and price buying on `asks` (best first) and selling into `pool`, the asks' notional capped.

    `cex_fee` is a fraction (0.001 = 10 bps). The size is 0 when the first unit does not pay.
    """
    size, notional = _walk(asks, 1.0 + cex_fee, partial(amm.sell_size_at_price, pool), math.inf, max_notional)
    fee_free = amm.amount_out(pool.reserve_base, pool.reserve_quote, size, 0.0)
    pool_fee = max(fee_free - amm.sell_base_proceeds(pool, size), 0.0)
    return CexDexTrade(size, notional, fee_free, notional * cex_fee, pool_fee)


def buy_pool_sell_cex(bids: Levels, pool: PoolEvent, cex_fee: float, max_notional: float) -> CexDexTrade:
    """Size and price buying from `pool` and selling on `bids` (best first), the swap's input capped."""
    size_cap = amm.base_for_quote(pool, max_notional)
    size, notional = _walk(bids, 1.0 - cex_fee, partial(amm.buy_size_at_price, pool), size_cap, math.inf)
    fee_free = amm.amount_in_for(pool.reserve_quote, pool.reserve_base, size, 0.0)
    pool_fee = max(amm.buy_base_cost(pool, size) - fee_free, 0.0)
    return CexDexTrade(size, fee_free, notional, notional * cex_fee, pool_fee)


def gas_quote(gas: GasEvent, gas_units: int, gas_token_price: float) -> float:
    """Return the gas of `gas_units` at the event's base fee plus tip, in quote units."""
    return gas_cost_native(gas, gas_units) * gas_token_price


class CexDexStrategy:
    """Evaluate every (CEX book, pool) pair of a symbol on one chain, both directions, after gas."""

    kind = "cex_dex"

    def __init__(
        self,
        min_net_edge_bps: float,
        max_notional: float,
        taker_fee_bps: Mapping[str, float],
        gas_units_per_swap: int = UNISWAP_V2_SWAP_GAS,
        chain: str = "ethereum",
        gas_price_symbol: str = "ETH/USDT",
        symbols: Iterable[str] = (),
    ) -> None:
        """`gas_price_symbol` prices the chain's gas token in the quote the symbols traded here use.

        A gas update re-evaluates `symbols` and every symbol a book or pool update has shown this strategy.
        """
        self._min_net_edge_bps = min_net_edge_bps
        self._max_notional = max_notional
        self._fee = {venue: bps / 1e4 for venue, bps in taker_fee_bps.items()}
        self._gas_units = gas_units_per_swap
        self._chain = chain
        self._gas_price_symbol = gas_price_symbol
        # The market view lists pools per symbol only, so a gas update needs the symbols to look at.
        self._symbols: set[str] = set(symbols)

    def on_book(self, market: ChainMarketView, book: BookEvent) -> list[CexDexEvaluation]:
        """Re-evaluate the pools of the book's symbol against this book."""
        self._symbols.add(book.symbol)
        gas = market.gas(self._chain)
        price = self.gas_token_price(market)
        if gas is None or price is None:
            return []
        return [
            evaluation
            for pool in self._pools(market, book.symbol)
            for evaluation in self.evaluate(book, pool, gas, price, book.ts)
        ]

    def on_pool(self, market: ChainMarketView, pool: PoolEvent) -> list[CexDexEvaluation]:
        """Re-evaluate the pool against every live book of its symbol."""
        if pool.chain != self._chain:
            return []
        self._symbols.add(pool.symbol)
        gas = market.gas(self._chain)
        price = self.gas_token_price(market)
        if gas is None or price is None:
            return []
        return [
            evaluation
            for book in self._books(market, pool.symbol)
            for evaluation in self.evaluate(book, pool, gas, price, pool.ts)
        ]

    def on_gas(self, market: ChainMarketView, gas: GasEvent) -> list[CexDexEvaluation]:
        """Re-evaluate every pair on the chain: gas changes whether a trade pays."""
        price = self.gas_token_price(market)
        if gas.chain != self._chain or price is None:
            return []
        evaluations = []
        for symbol in sorted(self._symbols):
            books = list(self._books(market, symbol))
            for pool in self._pools(market, symbol):
                for book in books:
                    evaluations.extend(self.evaluate(book, pool, gas, price, gas.ts))
        return evaluations

    def gas_token_price(self, market: ChainMarketView) -> float | None:
        """Price the gas token: the mid of the first live book of its symbol, else a pool's price, else None."""
        for book in self._books(market, self._gas_price_symbol):
            return (book.best_bid + book.best_ask) / 2.0
        for pool in self._pools(market, self._gas_price_symbol):
            return pool.price
        return None

    def evaluate(
        self, book: BookEvent, pool: PoolEvent, gas: GasEvent, gas_token_price: float, ts: int
    ) -> list[CexDexEvaluation]:
        """Evaluate buying on the book and selling into the pool, then buying from the pool and selling on it."""
        fee = self._fee[book.venue]
        gas_cost = gas_quote(gas, self._gas_units, gas_token_price)
        pool_venue = f"{pool.dex}:{pool.pool}"
        to_pool = buy_cex_sell_pool(book.asks, pool, fee, self._max_notional)
        from_pool = buy_pool_sell_cex(book.bids, pool, fee, self._max_notional)
        # The touch, for a direction where not even the first unit pays: the pool's spot before its fee.
        keep = 1.0 - pool.fee_bps / 1e4
        touch_to_pool = (book.best_ask, pool.price, pool.price * keep - book.best_ask * (1.0 + fee))
        touch_from_pool = (pool.price, book.best_bid, book.best_bid * (1.0 - fee) - pool.price / keep)
        return [
            self._evaluation(book, pool, gas, gas_cost, ts, book.venue, pool_venue, to_pool, touch_to_pool),
            self._evaluation(book, pool, gas, gas_cost, ts, pool_venue, book.venue, from_pool, touch_from_pool),
        ]

    def _evaluation(
        self,
        book: BookEvent,
        pool: PoolEvent,
        gas: GasEvent,
        gas_cost: float,
        ts: int,
        buy_venue: str,
        sell_venue: str,
        trade: CexDexTrade,
        touch: tuple[float, float, float],
    ) -> CexDexEvaluation:
        buy_ts, sell_ts = (book.ts, pool.ts) if buy_venue == book.venue else (pool.ts, book.ts)
        if trade.size > 0.0:
            buy_price, sell_price = trade.buy_cost / trade.size, trade.sell_proceeds / trade.size
            net_edge_bps = (trade.profit - gas_cost) / trade.buy_cost * 1e4
            fees = trade.fees
        else:
            # Per unit after the proportional fees; gas, a fixed cost, has no per-unit figure at size 0.
            buy_price, sell_price, marginal = touch
            net_edge_bps = marginal / buy_price * 1e4
            fees = 0.0
        evaluation = Evaluation(
            kind=self.kind,
            symbol=book.symbol,
            buy_venue=buy_venue,
            sell_venue=sell_venue,
            ts=ts,
            buy_book_ts=buy_ts,
            sell_book_ts=sell_ts,
            size=trade.size,
            buy_price=buy_price,
            sell_price=sell_price,
            gross_edge_bps=(sell_price - buy_price) / buy_price * 1e4,
            net_edge_bps=net_edge_bps,
            fees=fees,
            tradeable=trade.size > 0.0 and trade.profit > gas_cost and net_edge_bps >= self._min_net_edge_bps,
            gas=gas_cost,
            base_fee_gwei=gas.base_fee_gwei,
            priority_fee_gwei=gas.priority_fee_gwei,
        )
        return CexDexEvaluation(evaluation, gas_cost, gas.base_fee_gwei, gas.priority_fee_gwei, pool.block)

    def _pools(self, market: ChainMarketView, symbol: str) -> list[PoolEvent]:
        return [pool for pool in market.pools_for(symbol) if pool.chain == self._chain]

    def _books(self, market: ChainMarketView, symbol: str) -> Iterable[BookEvent]:
        for venue in market.venues_for(symbol):
            book = market.book(venue, symbol)
            if book is not None:
                yield book
