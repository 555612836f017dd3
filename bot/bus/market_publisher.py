"""Publish the signals role's market events (books, gas, pools) so roles in other processes see the markets."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from bot.bus.channels import Channels
from bot.bus.publisher import Publisher, route_by_type
from bot.bus.signing import Signer
from bot.clock import Clock, SystemClock
from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent
from bot.messages import BookMessage, GasMessage, MarketMessage, PoolMessage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MarketPublisherStats:
    """Books sent and books replaced by a newer one before their turn came (rate limit)."""

    books_sent: int = 0
    books_coalesced: int = 0
    gas_sent: int = 0
    pools_sent: int = 0


class MarketPublisher:
    """Turn accepted market events into Book/Gas/Pool messages, at most `book_rate_per_s` books per book.

    A book that arrives before its book's next slot waits as "pending"; a newer one replaces it (counted in
    `books_coalesced`); a timer sends the pending book when the slot opens, so the latest book always goes out.
    Gas and pool events go out as they come (one per block). Trades are not published. `on_event` is cheap:
    it runs on the engine's hot path.
    """

    def __init__(self, publisher: Publisher[MarketMessage], book_rate_per_s: float, clock: Clock | None = None) -> None:
        self.stats = MarketPublisherStats()
        self._publisher = publisher
        self._interval_s = 1.0 / book_rate_per_s
        self._clock = clock or SystemClock()
        self._last_sent: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], BookEvent] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    @classmethod
    def for_redis(
        cls,
        client: aioredis.Redis,
        channels: Channels,
        queue_size: int,
        book_rate_per_s: float,
        clock: Clock | None,
        signer: Signer | None = None,
    ) -> MarketPublisher:
        """A market publisher with its own queue and writer (pub/sub only: these channels have no stream), signing
        each message with `signer` when given."""
        publisher: Publisher[MarketMessage] = Publisher(
            client,
            route_by_type(channels),
            stream_maxlen=100,
            queue_size=queue_size,
            clock=clock,
            name="publisher:market",
            signer=signer,
            write_now=False,  # no one waits on a book snapshot: the books of a loop turn go out in one write
        )
        return cls(publisher, book_rate_per_s, clock)

    @property
    def publisher(self) -> Publisher[MarketMessage]:
        return self._publisher

    def start(self) -> None:
        self._publisher.start()

    async def close(self) -> None:
        """Send the held-back books, then flush and stop the writer."""
        self.flush_pending()
        await self._publisher.close()

    def on_event(self, event: MarketEvent) -> None:
        """Publish (or hold back, for a rate-limited book) one event the market state accepted."""
        if isinstance(event, BookEvent):
            self._on_book(event)
        elif isinstance(event, GasEvent):
            if self._publisher.submit(GasMessage.of(event)):
                self.stats.gas_sent += 1
        elif isinstance(event, PoolEvent) and self._publisher.submit(PoolMessage.of(event)):
            self.stats.pools_sent += 1

    def _on_book(self, book: BookEvent) -> None:
        key = (book.venue, book.symbol)
        if key in self._pending:
            self._pending[key] = book
            self.stats.books_coalesced += 1
            return
        wait = self._last_sent.get(key, -1e18) + self._interval_s - self._clock.monotonic()
        if wait <= 0.0:
            self._send(key, book)
            return
        self._pending[key] = book
        self._timers[key] = asyncio.get_running_loop().call_later(wait, self._flush, key)

    def _flush(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        book = self._pending.pop(key, None)
        if book is not None:
            self._send(key, book)

    def _send(self, key: tuple[str, str], book: BookEvent) -> None:
        self._last_sent[key] = self._clock.monotonic()
        if self._publisher.submit(BookMessage.of(book)):
            self.stats.books_sent += 1

    def flush_pending(self) -> None:
        """Send every held-back book now (at shutdown, before the publisher closes)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for key in list(self._pending):
            self._flush(key)
