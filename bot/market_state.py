"""The latest valid book per (venue, symbol), as strategies see it: only books that are usable now."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from bot.events import BookEvent, GasEvent, PoolEvent, TradeEvent
from bot.feeds.health import FeedHealth, LatencyStats, StreamState
from bot.rejections import RejectionCounter

Usable = Callable[[BookEvent, int], bool]
"""Whether a book may be used at a given local time (ms)."""


class Freshness:
    """A book is usable while its stream is live and it was received less than `stale_after_ms` ago.

    Age is judged on local receive time (`recv_ts`, else `ts` for recordings without one) at the time
    the caller gives: the system clock live, the replay clock in a replay.
    """

    def __init__(self, stale_after_ms: Mapping[str, int], health: FeedHealth | None = None) -> None:
        self._stale_after_ms = stale_after_ms
        self._health = health

    def __call__(self, book: BookEvent, now_ms: int) -> bool:
        if self._health is not None and not self._health.is_live(book.venue, book.symbol):
            return False
        received = book.recv_ts if book.recv_ts is not None else book.ts
        return now_ms - received <= self._stale_after_ms[book.venue]


class MarketState:
    """Holds the latest book per venue and symbol; rejects books older than the one it holds."""

    def __init__(
        self,
        rejections: RejectionCounter,
        usable: Usable | None = None,
        health: FeedHealth | None = None,
        chain_stale_after_ms: int | None = None,
    ) -> None:
        self._health = health
        self._chain_stale_after_ms = chain_stale_after_ms
        self._books: dict[tuple[str, str], BookEvent] = {}
        self._last_trades: dict[tuple[str, str], TradeEvent] = {}
        self._gas: dict[str, GasEvent] = {}
        self._pools: dict[tuple[str, str], PoolEvent] = {}
        self._venues_by_symbol: dict[str, list[str]] = {}
        self._rejections = rejections
        self._usable = usable or (lambda _book, _now: True)
        self.trades = 0
        self.as_of_ms = 0
        """The local time every usability question is judged at; the engine sets it once per event."""

    def apply(self, book: BookEvent) -> bool:
        """Store `book`; False (and a counted rejection) when it is older than the stored one."""
        key = (book.venue, book.symbol)
        held = self._books.get(key)
        if held is not None and book.ts < held.ts:
            self._rejections.reject(book.venue, "out_of_order", f"{book.symbol} ts {book.ts} < {held.ts}")
            return False
        if held is None:
            self._venues_by_symbol.setdefault(book.symbol, []).append(book.venue)
        self._books[key] = book
        return True

    def apply_trade(self, trade: TradeEvent) -> None:
        self._last_trades[(trade.venue, trade.symbol)] = trade
        self.trades += 1

    def apply_gas(self, gas: GasEvent) -> bool:
        """Store a chain's gas; False (counted) for a block older than the one held."""
        held = self._gas.get(gas.chain)
        if held is not None and gas.block < held.block:
            self._rejections.reject(gas.chain, "out_of_order", f"gas block {gas.block} < {held.block}")
            return False
        self._gas[gas.chain] = gas
        return True

    def apply_pool(self, pool: PoolEvent) -> bool:
        """Store a pool's reserves; False (counted) for a block older than the one held."""
        key = (pool.chain, pool.pool)
        held = self._pools.get(key)
        if held is not None and pool.block < held.block:
            self._rejections.reject(pool.chain, "out_of_order", f"pool {pool.pool} block {pool.block} < {held.block}")
            return False
        self._pools[key] = pool
        return True

    def latest_gas(self, chain: str) -> GasEvent | None:
        """The chain's latest gas, fresh or not (for display)."""
        return self._gas.get(chain)

    def latest_pools(self) -> list[PoolEvent]:
        """Every pool's latest state, fresh or not (for display)."""
        return list(self._pools.values())

    def gas(self, chain: str) -> GasEvent | None:
        """The chain's latest gas if it is fresh, else None (never a guess)."""
        gas = self._gas.get(chain)
        return gas if gas is not None and self._chain_fresh(gas, gas.chain, "gas") else None

    def pool(self, chain: str, address: str) -> PoolEvent | None:
        pool = self._pools.get((chain, address))
        return pool if pool is not None and self._chain_fresh(pool, chain, address) else None

    def pools_for(self, symbol: str) -> list[PoolEvent]:
        """Fresh pools of a canonical pair."""
        return [p for p in self._pools.values() if p.symbol == symbol and self._chain_fresh(p, p.chain, p.pool)]

    def _chain_fresh(self, event: GasEvent | PoolEvent, chain: str, stream: str) -> bool:
        if self._health is not None and chain in self._health.venues and not self._health.is_live(chain, stream):
            return False
        if self._chain_stale_after_ms is None:
            return True
        received = event.recv_ts if event.recv_ts is not None else event.ts
        return self.as_of_ms - received <= self._chain_stale_after_ms

    def book(self, venue: str, symbol: str) -> BookEvent | None:
        """The venue's latest book of `symbol` if it is usable now, else None."""
        book = self._books.get((venue, symbol))
        return book if book is not None and self._usable(book, self.as_of_ms) else None

    def last_trade(self, venue: str, symbol: str) -> TradeEvent | None:
        return self._last_trades.get((venue, symbol))

    def venues_for(self, symbol: str) -> Iterable[str]:
        return self._venues_by_symbol.get(symbol, ())

    def latency(self, venue: str) -> LatencyStats | None:
        """The venue's receive-minus-event-time lag and clock offset estimate (None without live feeds)."""
        return self._health.venue(venue).latency.stats() if self._health is not None else None

    def stream_state(self, venue: str, symbol: str) -> StreamState | None:
        """Live, stale, resyncing, … (None without live feeds, as in a replay)."""
        return self._health.state(venue, symbol) if self._health is not None else None
