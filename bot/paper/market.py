"""What the paper trader knows of the markets: recent books, pool states and blocks, and a way to wait for the
first of them at or after an execution time."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent

K = TypeVar("K")
E = TypeVar("E")
T = TypeVar("T")


def pool_venue(pool: PoolEvent) -> str:
    return f"{pool.dex}:{pool.pool}"


class MarketSource(Protocol):
    """Anything that hands each accepted market event to its listeners (the remote market view, a test)."""

    def add_listener(self, callback: Callable[[MarketEvent], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class Block:
    """A pool's state as of a block, and that block's gas."""

    pool: PoolEvent
    gas: GasEvent


def local_ts(event: MarketEvent) -> int:
    """When the signals role received `event` (its local clock, the clock decisions are stamped with), else the
    event's own time."""
    return event.recv_ts if event.recv_ts is not None else event.ts


class MarketHistory:
    """The last `depth` books per (venue, symbol), pool states per pool and gas per chain, as they arrive.

    Waiting (`wait_for`) gives up after a wall-clock timeout; with `market_time=True` (a backtest, where the
    market arrives as fast as it is replayed) it gives up once the market's own time has passed the wait's due
    time plus the timeout, so the outcome depends on the data alone, and `close()` ends every wait.
    """

    def __init__(self, depth: int = 512, market_time: bool = False) -> None:
        self._depth = depth
        self._books: dict[tuple[str, str], deque[BookEvent]] = {}
        self._pools: dict[str, deque[PoolEvent]] = {}
        self._gas: dict[str, deque[GasEvent]] = {}
        self._changed = asyncio.Event()
        self._market_time = market_time
        self._now_ms = 0
        self._version = 0
        self._stalled: dict[int, int] = {}
        self._tokens = itertools.count()
        self._closed = False

    @property
    def events(self) -> int:
        """Market events kept so far."""
        return self._version

    def stalled_waiters(self) -> int:
        """Waits that found nothing in the latest market event (they need a later one)."""
        return sum(1 for version in self._stalled.values() if version == self._version)

    def close(self) -> None:
        """No more market events will come: every wait returns what it finds now."""
        self._closed = True
        self._changed.set()

    def attach(self, source: MarketSource) -> None:
        source.add_listener(self.on_event)

    def on_event(self, event: MarketEvent) -> None:
        """Keep one market event (trades are ignored) and wake whoever waits for one."""
        if isinstance(event, BookEvent):
            self._append(self._books, (event.venue, event.symbol), event, lambda held: event.ts < held.ts)
        elif isinstance(event, PoolEvent):
            self._append(self._pools, pool_venue(event), event, lambda held: event.block < held.block)
        elif isinstance(event, GasEvent):
            self._append(self._gas, event.chain, event, lambda held: event.block <= held.block)
        else:
            return
        self._now_ms = max(self._now_ms, local_ts(event))
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _append(self, store: dict[K, deque[E]], key: K, event: E, stale: Callable[[E], bool]) -> None:
        held = store.get(key)
        if held is None:
            held = store[key] = deque(maxlen=self._depth)
        elif stale(held[-1]):
            return
        held.append(event)

    def book_at_or_after(self, venue: str, symbol: str, ts: int) -> BookEvent | None:
        """The first held book of `venue` and `symbol` received at or after `ts` (see `local_ts`)."""
        for book in self._books.get((venue, symbol), ()):
            if local_ts(book) >= ts:
                return book
        return None

    def latest_pool(self, venue: str) -> PoolEvent | None:
        pools = self._pools.get(venue)
        return pools[-1] if pools else None

    def block_for(self, venue: str, ts: int, target_block: int | None = None) -> Block | None:
        """The pool `venue` as of its transaction's block, once that block is settled.

        The block is `target_block`, else the first block at or after `ts`; it is settled once a later block's gas
        or pool event has come (every Sync log of the block is in by then). A pool is only published when it
        changes, so its state in a block is the latest one at or before it.
        """
        latest = self.latest_pool(venue)
        if latest is None:
            return None
        chain_gas = self._gas.get(latest.chain)
        if not chain_gas:
            return None
        target = next((gas for gas in chain_gas if gas.block >= (target_block or 0) and gas.ts >= ts), None)
        if target is None:
            return None
        head = max(chain_gas[-1].block, latest.block)
        if head <= target.block:
            return None
        state = None
        for pool in self._pools[venue]:
            if pool.block > target.block:
                break
            state = pool
        return Block(state, target) if state is not None else None

    def mid_price(self, symbol: str) -> float | None:
        """A recent mid of `symbol` from any book, else a pool's price: to value gas in quote units."""
        for (_, book_symbol), books in self._books.items():
            if book_symbol == symbol and books:
                return (books[-1].best_bid + books[-1].best_ask) / 2.0
        for pools in self._pools.values():
            if pools and pools[-1].symbol == symbol:
                return pools[-1].price
        return None

    async def wait_for(self, lookup: Callable[[], T | None], timeout_s: float, due_ms: int = 0) -> T | None:
        """Return `lookup()` as soon as it finds something, re-trying on each new event; None after `timeout_s`
        (of wall time, or in market time past `due_ms`, see the class docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        give_up_ms = due_ms + timeout_s * 1000.0
        token = next(self._tokens)
        try:
            while (found := lookup()) is None:
                if self._closed or (self._market_time and self._now_ms > give_up_ms):
                    return None
                remaining = deadline - loop.time()
                if remaining <= 0 and not self._market_time:
                    return None
                self._stalled[token] = self._version
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.
                    async with asyncio.timeout(None if self._market_time else remaining):
                        await self._changed.wait()
                except TimeoutError:
                    return lookup()
                finally:
                    self._stalled.pop(token, None)
            return found
        finally:
            self._stalled.pop(token, None)
