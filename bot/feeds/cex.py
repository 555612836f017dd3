"""CEX feed: ccxt.pro watch loops for one venue (a book loop and a trade loop per symbol), emitting
validated events, keeping the streams' health, and restarting the client when a stream stays unusable."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.clock import Clock, SystemClock
from bot.events import BookEvent, MarketEvent, TradeEvent
from bot.feeds.ccxt_adapter import BookCopy, CcxtProClient, TradeCopy, classify_error
from bot.feeds.health import FeedHealth, StreamState
from bot.rejections import RejectionCounter
from bot.tasks import TaskSet

log = logging.getLogger(__name__)

EventSink = Callable[[MarketEvent], None]
ClientFactory = Callable[[], CcxtProClient]

DISCONNECT_DEDUP_MS = 1_000
CLIENT_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded."""

    initial_s: float = 0.2
    maximum_s: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2.0**attempt)
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class FeedTimings:
    """When a silent stream is stale, when an unusable one forces a reconnect, how often to check."""

    stale_after_ms: int = 2_000
    reconnect_after_ms: int = 5_000
    check_interval_s: float = 0.1


class CexVenueFeed:
    """All streams of one venue through one ccxt.pro client."""

    def __init__(
        self,
        venue: str,
        client_factory: ClientFactory,
        symbols: Sequence[str],
        depth: int,
        sink: EventSink,
        health: FeedHealth,
        rejections: RejectionCounter,
        clock: Clock | None = None,
        timings: FeedTimings | None = None,
        backoff: Backoff | None = None,
        trades: bool = True,
        seed: int | None = None,
    ) -> None:
        self.venue = venue
        self._client_factory = client_factory
        self._client = client_factory()
        self._symbols = tuple(symbols)
        self._depth = depth
        self._sink = sink
        self._health = health
        self._rejections = rejections
        self._clock = clock or SystemClock()
        self._timings = timings or FeedTimings()
        self._backoff = backoff or Backoff()
        self._trades = trades
        self._rng = random.Random(seed)
        self._loops = TaskSet()
        self._watchdog_task = TaskSet()
        self._last_restart_ms = 0
        self._last_disconnect_ms = -DISCONNECT_DEDUP_MS

    def start(self) -> None:
        """Start one book loop (and one trade loop) per symbol, and the watchdog."""
        self._last_restart_ms = self._clock.now_ms()
        for symbol in self._symbols:
            self._health.register(self.venue, symbol, self._last_restart_ms)
        self._start_loops()
        self._watchdog_task.spawn(self._watchdog(), name=f"feed:{self.venue}:watchdog")

    def _start_loops(self) -> None:
        for symbol in self._symbols:
            self._loops.spawn(self._watch_books(symbol), name=f"feed:{self.venue}:{symbol}:book")
            if self._trades:
                self._loops.spawn(self._watch_trades(symbol), name=f"feed:{self.venue}:{symbol}:trades")

    async def close(self) -> None:
        """Stop every loop and close the ccxt.pro client."""
        await self._watchdog_task.cancel_all()
        await self._loops.cancel_all()
        await self._close_client(self._client)

    async def restart(self) -> None:
        """Replace the client with a new one: every stream reconnects, resubscribes and resyncs.

        The watch loops are restarted too: a client whose receive loop died (ccxt stops reading after
        a frame it cannot parse) never resolves nor rejects the futures they wait on.
        """
        now = self._clock.now_ms()
        self._last_restart_ms = now
        self._health.on_reconnect(self.venue, now)
        log.warning(
            "%s: reconnecting (a stream was unusable for over %d ms)", self.venue, self._timings.reconnect_after_ms
        )
        await self._loops.cancel_all()
        old, self._client = self._client, self._client_factory()
        self._start_loops()
        await self._close_client(old)

    @staticmethod
    async def _close_client(client: CcxtProClient) -> None:
        try:
            await asyncio.wait_for(client.close(), CLIENT_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("a ccxt.pro client did not close within %.0f s; abandoned", CLIENT_CLOSE_TIMEOUT_S)

    async def _watch_books(self, symbol: str) -> None:
        await self._loop(symbol, lambda client: client.watch_book(symbol, self._depth), self._on_book)

    async def _watch_trades(self, symbol: str) -> None:
        await self._loop(symbol, lambda client: client.watch_trades(symbol), self._on_trades)

    async def _loop(self, symbol: str, watch: Callable[[CcxtProClient], Any], handle: Callable[[Any], None]) -> None:
        attempt = 0
        while True:
            try:
                result = await watch(self._client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
                self._on_error(symbol, exc, delay)
                await self._clock.sleep(delay)
                continue
            attempt = 0
            handle(result)

    def _on_error(self, symbol: str, exc: Exception, delay: float) -> None:
        kind = classify_error(exc)
        now = self._clock.now_ms()
        if kind == "disconnect" and now - self._last_disconnect_ms > DISCONNECT_DEDUP_MS:
            self._last_disconnect_ms = now
            self._health.venue(self.venue).reconnects += 1
        self._health.on_fault(self.venue, symbol, kind, StreamState.RESYNCING, now)
        log.warning("%s %s: %s (%s: %s); retrying in %.2f s", self.venue, symbol, kind, type(exc).__name__, exc, delay)

    def _on_book(self, copy: BookCopy) -> None:
        recv_ts = self._clock.now_ms()
        if copy.timestamp is None:
            # Book messages of these venues carry the exchange's time; a book without it (Binance's REST
            # snapshot) is not emitted, so one stream never mixes two clocks. The next update brings it.
            self._health.venue(self.venue).untimed_books += 1
            return
        try:
            event = BookEvent.from_levels(self.venue, copy.symbol, copy.timestamp, copy.bids, copy.asks, recv_ts)
        except (TypeError, ValueError) as exc:
            self._rejections.reject(self.venue, "invalid_book", str(exc))
            self._health.on_fault(self.venue, copy.symbol, "invalid_book", StreamState.INVALID, recv_ts)
            return
        self._health.on_book(self.venue, copy.symbol, recv_ts, copy.timestamp)
        self._sink(event)

    def _on_trades(self, trades: list[TradeCopy]) -> None:
        recv_ts = self._clock.now_ms()
        for trade in trades:
            fields: dict[str, Any] = {
                "venue": self.venue,
                "symbol": trade.symbol,
                "ts": trade.timestamp if trade.timestamp is not None else recv_ts,
                "recv_ts": recv_ts,
                "price": trade.price,
                "size": trade.amount,
                "side": trade.side,
            }
            try:
                event = TradeEvent.model_validate(fields)
            except ValidationError as exc:
                self._rejections.reject(self.venue, "invalid_trade", exc.errors()[0]["msg"])
                continue
            self._sink(event)

    async def _watchdog(self) -> None:
        timings = self._timings
        while True:
            await self._clock.sleep(timings.check_interval_s)
            now = self._clock.now_ms()
            for symbol in self._health.mark_stale(self.venue, now, timings.stale_after_ms):
                log.warning("%s %s: stale (no update for %d ms)", self.venue, symbol, timings.stale_after_ms)
            unusable_ms = self._health.unhealthy_for(self.venue, now)
            if unusable_ms > timings.reconnect_after_ms and now - self._last_restart_ms > timings.reconnect_after_ms:
                await self.restart()
