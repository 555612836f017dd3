"""The signals role's core: book events in, signals out (market state → strategies → scorer → tracker)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.clock import Clock, SystemClock
from bot.config import CexCexConfig
from bot.events import BookEvent
from bot.market_state import MarketState
from bot.messages import Signal
from bot.opportunities import OpportunityTracker
from bot.queues import BoundedQueue
from bot.rejections import RejectionCounter
from bot.scoring.rule import RuleScorer
from strategies.base import Evaluation, Strategy

log = logging.getLogger(__name__)

SignalSink = Callable[[Signal], object]


@dataclass(slots=True)
class EngineStats:
    """What the engine has seen and said."""

    updates: int = 0
    opportunities: int = 0
    signals: int = 0
    strategy_errors: int = 0


class SignalEngine:
    """Turn book events into signals; a bounded queue decouples it from the feeds."""

    def __init__(
        self,
        strategies: Sequence[Strategy],
        scorer: RuleScorer,
        steps: CexCexConfig,
        sink: SignalSink,
        rejections: RejectionCounter,
        queue_size: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        self.stats = EngineStats()
        self.market = MarketState(rejections)
        self._strategies = tuple(strategies)
        self._scorer = scorer
        self._tracker = OpportunityTracker(steps)
        self._sink = sink
        self._clock = clock or SystemClock()
        self._queue: BoundedQueue[BookEvent] = BoundedQueue("engine", queue_size, self._clock.monotonic)

    @property
    def open_opportunities(self) -> int:
        return self._tracker.open_count

    @property
    def dropped_updates(self) -> int:
        return self._queue.dropped

    def submit(self, book: BookEvent) -> None:
        """Queue a book event (the feeds' sink); a full queue drops it, counted."""
        self._queue.offer(book)

    async def run(self) -> None:
        """Process queued events until `stop()`."""
        while (book := await self._queue.get()) is not None:
            self.on_book(book)

    async def stop(self) -> None:
        await self._queue.close()

    def on_book(self, book: BookEvent) -> None:
        """Apply one book event and emit the signals it calls for."""
        if not self.market.apply(book):
            return
        self.stats.updates += 1
        for strategy in self._strategies:
            try:
                evaluations = strategy.on_book(self.market, book)
            except Exception:
                # A faulty strategy costs its own evaluation of this event, never the daemon.
                self.stats.strategy_errors += 1
                log.exception("strategy %s failed on %s %s", strategy.kind, book.venue, book.symbol)
                continue
            for evaluation in evaluations:
                self._observe(evaluation)

    def close_all(self) -> None:
        """Signal `closed` for every open opportunity (on shutdown)."""
        for signal in self._tracker.close_all(self._clock.now_ms()):
            self._emit(signal)

    def _observe(self, evaluation: Evaluation) -> None:
        if not evaluation.tradeable and not self._tracker.is_open(evaluation.key):
            return
        score = self._scorer.score(evaluation) if evaluation.tradeable else None
        signal = self._tracker.observe(evaluation, score)
        if signal is None:
            return
        if signal.status == "open":
            self.stats.opportunities += 1
        self._emit(signal)

    def _emit(self, signal: Signal) -> None:
        self.stats.signals += 1
        self._sink(signal)
