"""`arbbot replay`: drive the signal pipeline from recordings, publishing as live, deterministically.

Time in a replay is the recording's: a clock that reads the current event's receive time, so staleness,
closes and signal timestamps depend on the data alone, never on how fast the machine replays it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.config import RootConfig
from bot.events import BookEvent, MarketEvent, TradeEvent
from bot.messages import Signal
from bot.recording import merge_events, time_key
from bot.rejections import RejectionCounter
from bot.signals_role import build_engine


class ReplayClock:
    """Reads the time of the event being replayed; sleeping returns at once."""

    def __init__(self) -> None:
        self._now_ms = 0
        self._origin = 0.0

    def advance(self, now_ms: int) -> None:
        self._now_ms = max(self._now_ms, now_ms)

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._now_ms / 1_000.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    events: int = 0
    skipped: int = 0
    updates: int = 0
    opportunities: int = 0
    signals: int = 0
    signals_from_stale_books: int = 0
    rejected: int = 0


class Replayer:
    """The synchronous core of a replay: one engine on a replay clock, fed event by event.

    `arbbot replay` paces it; the dataset builder drives it directly and looks at the engine between events.
    """

    def __init__(
        self, config: RootConfig, sink: Callable[[Signal], object], rejections: RejectionCounter | None = None
    ) -> None:
        self.config = config
        self.rejections = rejections or RejectionCounter()
        self.clock = ReplayClock()
        self.engine = build_engine(config, sink, self.rejections, self.clock)
        self.summary = ReplaySummary()

    def feed(self, event: MarketEvent) -> bool:
        """Apply one event at its time; False (counted) for a book or trade of a venue the config lacks."""
        if isinstance(event, BookEvent | TradeEvent) and event.venue not in self.config.venues:
            self.rejections.reject(event.venue, "unknown_venue", f"{event.venue} is not in the config")
            self.summary.skipped += 1
            return False
        self.clock.advance(time_key(event))
        self.engine.on_event(event)
        self.summary.events += 1
        return True

    def finish(self) -> ReplaySummary:
        """Close every open opportunity and return the summary."""
        self.engine.close_all()
        stats, summary = self.engine.stats, self.summary
        summary.updates, summary.opportunities, summary.signals = stats.updates, stats.opportunities, stats.signals
        summary.signals_from_stale_books = stats.signals_from_stale_books
        summary.rejected = self.rejections.total
        return summary


async def replay_events(
    config: RootConfig,
    events: Iterable[MarketEvent],
    sink: Callable[[Signal], object],
    speed: float | None = None,
    rejections: RejectionCounter | None = None,
) -> ReplaySummary:
    """Feed `events` through the pipeline; `speed` paces them at real time × speed (None: as fast as possible)."""
    replayer = Replayer(config, sink, rejections)
    loop = asyncio.get_running_loop()
    started_wall: float | None = None
    first_event_ms = 0
    for event in events:
        if speed is not None:
            at = time_key(event)
            if started_wall is None:
                started_wall, first_event_ms = loop.time(), at
            due = started_wall + (at - first_event_ms) / 1_000.0 / speed
            await asyncio.sleep(max(0.0, due - loop.time()))
        elif replayer.summary.events % 2_000 == 0:
            await asyncio.sleep(0)  # let the publisher drain
        replayer.feed(event)
    return replayer.finish()


async def replay_files(
    config: RootConfig,
    paths: Sequence[Path],
    sink: Callable[[Signal], object],
    speed: float | None = None,
    rejections: RejectionCounter | None = None,
) -> ReplaySummary:
    """Replay recordings merged by receive time."""
    rejections = rejections or RejectionCounter()
    return await replay_events(config, merge_events(paths, rejections), sink, speed, rejections)
