"""Drive the market simulator into local venue servers in real time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bot.clock import Clock, SystemClock
from bot.events import Level
from bot.sim.market import MarketSimulator


class BookPublisher(Protocol):
    """Anything that can take a venue's new book, such as a local venue server."""

    def publish_book(self, symbol: str, ts: int, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None: ...

    def publish_trade(self, symbol: str, ts: int, price: float, size: float, side: str) -> None: ...


class SimulationDriver:
    """Step the simulator every `tick_ms` and hand each venue its books, with strictly rising `ts`."""

    def __init__(
        self,
        simulator: MarketSimulator,
        venues: Mapping[str, BookPublisher],
        clock: Clock | None = None,
    ) -> None:
        self._simulator = simulator
        self._venues = venues
        self._clock = clock or SystemClock()
        self._last_ts: dict[tuple[str, str], int] = {}
        self.ticks = 0

    def step(self) -> None:
        """Advance one tick and publish every book of it."""
        now = self._clock.now_ms()
        for book in self._simulator.step():
            key = (book.venue, book.symbol)
            ts = max(now, self._last_ts.get(key, 0) + 1)
            self._last_ts[key] = ts
            venue = self._venues[book.venue]
            venue.publish_book(book.symbol, ts, book.bids, book.asks)
            for trade in book.trades:
                venue.publish_trade(book.symbol, ts, trade.price, trade.size, trade.side)
        self.ticks += 1

    async def run(self, ticks: int | None = None) -> None:
        """Publish `ticks` ticks (forever if None), paced at the simulator's tick interval."""
        interval = self._simulator.config.tick_ms / 1_000.0
        deadline = self._clock.monotonic()
        while ticks is None or self.ticks < ticks:
            self.step()
            deadline += interval
            await self._clock.sleep(max(0.0, deadline - self._clock.monotonic()))
