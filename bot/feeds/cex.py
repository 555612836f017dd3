"""CEX book feed: one ccxt.pro watch loop per (venue, symbol), emitting validated `book` events."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bot.clock import Clock, SystemClock
from bot.events import BookEvent
from bot.feeds.ccxt_adapter import BookCopy, CcxtProClient
from bot.rejections import RejectionCounter
from bot.tasks import TaskSet

log = logging.getLogger(__name__)

BookSink = Callable[[BookEvent], None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded."""

    initial_s: float = 0.2
    maximum_s: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2.0**attempt)
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass(slots=True)
class FeedStats:
    """Counters of one venue feed."""

    updates: int = 0
    errors: int = 0
    last_error: str = ""
    per_symbol_updates: dict[str, int] = field(default_factory=dict)


class CexBookFeed:
    """Watch the books of one venue through ccxt.pro and hand each copy, validated, to `sink`."""

    def __init__(
        self,
        venue: str,
        client: CcxtProClient,
        symbols: Sequence[str],
        depth: int,
        sink: BookSink,
        rejections: RejectionCounter,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        seed: int | None = None,
    ) -> None:
        self.venue = venue
        self.stats = FeedStats()
        self._client = client
        self._symbols = tuple(symbols)
        self._depth = depth
        self._sink = sink
        self._rejections = rejections
        self._clock = clock or SystemClock()
        self._backoff = backoff or Backoff()
        self._rng = random.Random(seed)
        self._tasks = TaskSet()

    def start(self) -> None:
        """Start one watch loop per symbol."""
        for symbol in self._symbols:
            self._tasks.spawn(self._watch(symbol), name=f"feed:{self.venue}:{symbol}")

    async def close(self) -> None:
        """Stop every loop and close the ccxt.pro client."""
        await self._tasks.cancel_all()
        await self._client.close()

    async def _watch(self, symbol: str) -> None:
        attempt = 0
        while True:
            try:
                copy = await self._client.watch_book(symbol, self._depth)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s %s: %s; retrying in %.2f s", self.venue, symbol, self.stats.last_error, delay)
                await self._clock.sleep(delay)
                continue
            attempt = 0
            self._emit(copy)

    def _emit(self, copy: BookCopy) -> None:
        event = self._to_event(copy)
        if event is None:
            return
        self.stats.updates += 1
        self.stats.per_symbol_updates[copy.symbol] = self.stats.per_symbol_updates.get(copy.symbol, 0) + 1
        self._sink(event)

    def _to_event(self, copy: BookCopy) -> BookEvent | None:
        recv_ts = self._clock.now_ms()
        fields: dict[str, Any] = {
            "venue": self.venue,
            "symbol": copy.symbol,
            "ts": copy.timestamp if copy.timestamp is not None else recv_ts,
            "recv_ts": recv_ts,
            "bids": copy.bids,
            "asks": copy.asks,
        }
        try:
            return BookEvent.model_validate(fields)
        except ValidationError as exc:
            self._rejections.reject(self.venue, "invalid_book", exc.errors()[0]["msg"])
            return None
