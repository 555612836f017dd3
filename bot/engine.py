"""The signals role's core: book events in, signals out (market state → strategies → scorer → tracker)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.clock import Clock, SystemClock
from bot.config import CexCexConfig
from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent, TradeEvent
from bot.feeds.health import FeedHealth, StreamState
from bot.market_state import MarketState, Usable
from bot.messages import Signal
from bot.opportunities import OpportunityTracker
from bot.queues import BoundedQueue
from bot.rejections import RejectionCounter
from bot.scoring.base import Scorer
from bot.scoring.rule import Score
from strategies.base import Evaluation

log = logging.getLogger(__name__)

SignalSink = Callable[[Signal], object]


@dataclass(slots=True)
class EngineStats:
    """What the engine has seen and said."""

    updates: int = 0
    trades: int = 0
    gas_events: int = 0
    pool_events: int = 0
    opportunities: int = 0
    signals: int = 0
    signals_by_kind: Counter[str] = field(default_factory=Counter)
    strategy_errors: int = 0
    listener_errors: int = 0
    scorer_errors: int = 0
    signals_from_stale_books: int = 0
    event_errors: int = 0
    """Events whose processing raised (a bug): logged and skipped, the engine goes on."""


class SignalEngine:
    """Turn market events into signals.

    While `run()` runs, an event submitted with nothing queued before it is processed at once, in the submitting
    feed's stack: its signals are published before the event loop turns again. Events submitted meanwhile (from
    within that processing, or before `run()`) wait in a bounded queue that `run()` drains in order.

    An opportunity closes as soon as one of its books stops being usable (stale, resyncing, invalid).
    """

    def __init__(
        self,
        strategies: Sequence[Any],
        scorer: Scorer,
        steps: CexCexConfig,
        sink: SignalSink,
        rejections: RejectionCounter,
        queue_size: int = 10_000,
        clock: Clock | None = None,
        usable: Usable | None = None,
        health: FeedHealth | None = None,
        chain_stale_after_ms: int | None = None,
    ) -> None:
        self.stats = EngineStats()
        self.market = MarketState(rejections, usable, health, chain_stale_after_ms)
        self._strategies = tuple(strategies)
        self._scorer = scorer
        self._tracker = OpportunityTracker(steps)
        self._sink = sink
        self._clock = clock or SystemClock()
        self._queue: BoundedQueue[MarketEvent] = BoundedQueue("engine", queue_size, self._clock.monotonic)
        self._market_listeners: list[Callable[[MarketEvent], object]] = []
        self._evaluation_listeners: list[Callable[[Sequence[Evaluation]], object]] = []
        self._running = False
        self._processing = False

    def add_market_listener(self, listener: Callable[[MarketEvent], object]) -> None:
        """Call `listener` with every market event the market state accepted, before strategies see it."""
        self._market_listeners.append(listener)

    def add_evaluation_listener(self, listener: Callable[[Sequence[Evaluation]], object]) -> None:
        """Call `listener` with every batch of evaluations (tradeable or not), before they are scored."""
        self._evaluation_listeners.append(listener)

    @property
    def open_opportunities(self) -> int:
        return self._tracker.open_count

    @property
    def dropped_updates(self) -> int:
        return self._queue.dropped

    def submit(self, event: MarketEvent) -> None:
        """The feeds' sink: process a market event now if nothing is queued before it, else queue it (a full queue
        drops it, counted)."""
        if self._running and not self._processing and not len(self._queue):
            self._process(event)
        else:
            self._queue.offer(event)

    async def run(self) -> None:
        """Process submitted events until `stop()`."""
        self._running = True
        try:
            while (event := await self._queue.get()) is not None:
                self._process(event)
        finally:
            self._running = False

    def _process(self, event: MarketEvent) -> None:
        self._processing = True
        try:
            self.on_event(event)
        except Exception:
            # A bug in one event's processing costs that event, never the feed that submitted it.
            self.stats.event_errors += 1
            log.exception("engine failed on a %s event", event.type)
        finally:
            self._processing = False

    def on_event(self, event: MarketEvent) -> None:
        if isinstance(event, BookEvent):
            self.on_book(event)
        elif isinstance(event, TradeEvent):
            self.market.apply_trade(event)
            self.stats.trades += 1
            self._tell_market_listeners(event)
        elif isinstance(event, GasEvent):
            self.market.as_of_ms = self._clock.now_ms()
            self.stats.gas_events += 1
            if self.market.apply_gas(event):
                self._tell_market_listeners(event)
                self._run_strategies("on_gas", event)
        elif isinstance(event, PoolEvent):
            self.market.as_of_ms = self._clock.now_ms()
            self.stats.pool_events += 1
            if self.market.apply_pool(event):
                self._tell_market_listeners(event)
                self._close_where(lambda key: key[1] == event.symbol and not self._legs_usable(key))
                self._run_strategies("on_pool", event)

    def on_stream_state(self, venue: str, symbol: str, state: StreamState) -> None:
        """A feed stream changed state; close the opportunities that relied on it if it is no longer live."""
        if state is StreamState.LIVE:
            return
        self.market.as_of_ms = self._clock.now_ms()
        if symbol == "gas":  # a chain's gas stream: every on-chain opportunity relied on it
            self._close_where(lambda key: any(":" in leg for leg in key[2:]))
        else:  # a book stream (venue, symbol) or a pool stream (chain, pool address)
            self._close_where(
                lambda key: (
                    (key[1] == symbol and venue in key[2:]) or any(leg.endswith(":" + symbol) for leg in key[2:])
                )
            )

    async def stop(self) -> None:
        """Let `run()` finish what is queued and return; events submitted from now on are queued, not processed."""
        self._running = False
        await self._queue.close()

    def on_book(self, book: BookEvent) -> None:
        """Apply one book event and emit the signals it calls for."""
        self.market.as_of_ms = self._clock.now_ms()  # one instant for every freshness question of this event
        if not self.market.apply(book):
            return
        self.stats.updates += 1
        self._tell_market_listeners(book)
        self._close_where(lambda key: key[1] == book.symbol and not self._legs_usable(key))
        self._run_strategies("on_book", book)

    def _tell_market_listeners(self, event: MarketEvent) -> None:
        for listener in self._market_listeners:
            self._call_listener(listener, event)

    def _call_listener(self, listener: Callable[[Any], object], argument: object) -> None:
        try:
            listener(argument)
        except Exception:
            # A faulty listener (feature tracker, market publisher) costs its own work, never the engine.
            self.stats.listener_errors += 1
            log.exception("engine listener %r failed", listener)

    def _run_strategies(self, hook: str, event: MarketEvent) -> None:
        for strategy in self._strategies:
            handler = getattr(strategy, hook, None)
            if handler is None:
                continue
            try:
                evaluations = handler(self.market, event)
            except Exception:
                # A faulty strategy costs its own evaluation of this event, never the daemon.
                self.stats.strategy_errors += 1
                log.exception("strategy %s failed in %s", strategy.kind, hook)
                continue
            # On-chain strategies wrap their Evaluation with what they assumed about gas.
            batch: list[Evaluation] = [getattr(evaluation, "evaluation", evaluation) for evaluation in evaluations]
            if not batch:
                continue
            for listener in self._evaluation_listeners:
                self._call_listener(listener, batch)
            self._observe_batch(batch)

    def _legs_usable(self, key: tuple[str, str, str, str]) -> bool:
        _, symbol, buy_venue, sell_venue = key
        return all(self._leg_usable(leg, symbol) for leg in (buy_venue, sell_venue))

    def _leg_usable(self, leg: str, symbol: str) -> bool:
        if ":" not in leg:
            return self.market.book(leg, symbol) is not None
        address = leg.split(":", 1)[1]  # "{dex}:{pool address}"
        return any(pool.pool == address for pool in self.market.pools_for(symbol))

    def _close_where(self, predicate: Callable[[tuple[str, str, str, str]], bool]) -> None:
        for key in self._tracker.open_keys():
            if predicate(key) and (signal := self._tracker.close(key, self._clock.now_ms())) is not None:
                self._emit(signal)

    def close_all(self) -> None:
        """Signal `closed` for every open opportunity (on shutdown)."""
        for signal in self._tracker.close_all(self._clock.now_ms()):
            self._emit(signal)

    def _observe_batch(self, batch: Sequence[Evaluation]) -> None:
        tradeable = [evaluation for evaluation in batch if evaluation.tradeable]
        scores: list[Score] | None = []
        if tradeable:
            try:
                scores = self._scorer.score_batch(tradeable)
                if len(scores) != len(tradeable):
                    raise ValueError(f"{len(scores)} scores for {len(tradeable)} evaluations")
            except Exception:
                # No score, no signal: this update's tradeable evaluations wait for the next update.
                self.stats.scorer_errors += 1
                log.exception("scorer failed on %d evaluations", len(tradeable))
                scores = None
        pending = iter(scores or ())
        for evaluation in batch:
            if not evaluation.tradeable:
                self._observe(evaluation, None)
            elif scores is not None:
                self._observe(evaluation, next(pending))

    def _observe(self, evaluation: Evaluation, score: Score | None) -> None:
        if not evaluation.tradeable and not self._tracker.is_open(evaluation.key):
            return
        signal = self._tracker.observe(evaluation, score)
        if signal is None:
            return
        if signal.status == "open":
            self.stats.opportunities += 1
        if signal.status != "closed" and not self._legs_usable(evaluation.key):
            # Never expected: strategies only see usable books. Counted so a summary can prove it.
            self.stats.signals_from_stale_books += 1
        self._emit(signal)

    def _emit(self, signal: Signal) -> None:
        self.stats.signals += 1
        self.stats.signals_by_kind[signal.kind] += 1
        self._sink(signal)
