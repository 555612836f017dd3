"""A failing engine listener or scorer costs its own work, never the engine, and never a wrong signal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from helpers import eventually

from bot.config import CexCexConfig, RuleScorerConfig
from bot.engine import SignalEngine
from bot.events import BookEvent, MarketEvent
from bot.messages import Signal
from bot.rejections import RejectionCounter
from bot.replay import ReplayClock
from bot.scoring.rule import RuleScorer, Score
from strategies.base import Evaluation
from strategies.cex_cex import CexCexStrategy

BTC = "BTC/USDT"
T0 = 1_763_700_000_000


class FlakyScorer:
    """The rule scorer, but failing (raising, or returning too few scores) while `mode` says so."""

    def __init__(self) -> None:
        self.mode = "ok"
        self._rule = RuleScorer(RuleScorerConfig())

    def score_batch(self, evaluations: Sequence[Evaluation]) -> list[Score]:
        if self.mode == "raise":
            raise RuntimeError("model blew up")
        scores = self._rule.score_batch(evaluations)
        return scores[:-1] if self.mode == "short" else scores


def _book(venue: str, ts: int, bid: float, ask: float) -> BookEvent:
    return BookEvent(venue=venue, symbol=BTC, ts=ts, bids=((bid, 1.0),), asks=((ask, 1.0),))


def _engine(scorer: FlakyScorer, signals: list[Signal]) -> SignalEngine:
    fees = {"alpha": 0.0, "beta": 0.0}
    clock = ReplayClock()
    clock.advance(T0)
    return SignalEngine(
        [CexCexStrategy(CexCexConfig(), fees)], scorer, CexCexConfig(), signals.append, RejectionCounter(), clock=clock
    )


def test_a_failing_listener_is_counted_and_the_signals_still_come() -> None:
    signals: list[Signal] = []
    engine = _engine(FlakyScorer(), signals)
    seen: list[MarketEvent] = []

    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    engine.add_market_listener(broken)
    engine.add_market_listener(seen.append)
    engine.add_evaluation_listener(broken)
    engine.on_book(_book("alpha", T0, 99.0, 100.0))
    engine.on_book(_book("beta", T0 + 1, 101.0, 102.0))

    assert [s.status for s in signals] == ["open"]
    assert len(seen) == 2  # the listener after the broken one still heard every event
    assert engine.stats.listener_errors == 3  # two market events, one evaluation batch (the first book pairs with none)


def test_a_failing_or_short_scorer_gives_no_signal_and_is_counted() -> None:
    for mode in ("raise", "short"):
        signals: list[Signal] = []
        scorer = FlakyScorer()
        engine = _engine(scorer, signals)
        engine.on_book(_book("alpha", T0, 99.0, 100.0))
        scorer.mode = mode
        engine.on_book(_book("beta", T0 + 1, 101.0, 102.0))
        assert signals == [], mode
        assert engine.stats.scorer_errors == 1, mode
        scorer.mode = "ok"
        engine.on_book(_book("beta", T0 + 2, 101.0, 102.0))
        assert [s.status for s in signals] == ["open"], mode


async def test_a_submitted_book_is_processed_before_submit_returns_while_the_engine_runs() -> None:
    signals: list[Signal] = []
    engine = _engine(FlakyScorer(), signals)
    engine.submit(_book("alpha", T0, 99.0, 100.0))  # before run(): queued, not processed
    assert engine.stats.updates == 0
    loop = asyncio.get_running_loop()
    running = loop.create_task(engine.run())
    await eventually(lambda: engine.stats.updates == 1, message="the queued book was never processed")
    engine.submit(_book("beta", T0 + 1, 101.0, 102.0))  # crosses alpha: the signal is out on return
    assert engine.stats.updates == 2
    assert [signal.status for signal in signals] == ["open"]
    await engine.stop()
    await running
    engine.submit(_book("beta", T0 + 2, 99.5, 99.8))  # after stop(): not processed any more
    assert engine.stats.updates == 2


async def test_events_submitted_during_processing_wait_their_turn_in_order() -> None:
    signals: list[Signal] = []
    engine = _engine(FlakyScorer(), signals)
    order: list[tuple[str, int]] = []
    follow_ups = [_book("beta", T0 + 1, 101.0, 102.0), _book("beta", T0 + 2, 99.5, 99.8)]

    def record_and_submit_more(event: MarketEvent) -> None:
        assert isinstance(event, BookEvent)
        order.append((event.venue, event.ts))
        if follow_ups:
            engine.submit(follow_ups.pop(0))  # from within processing: queued behind the current event

    engine.add_market_listener(record_and_submit_more)
    running = asyncio.get_running_loop().create_task(engine.run())
    await asyncio.sleep(0)  # run() starts and waits for events
    engine.submit(_book("alpha", T0, 99.0, 100.0))
    assert order == [("alpha", T0)]
    await eventually(lambda: engine.stats.updates == 3, message="the queued books were never processed")
    assert order == [("alpha", T0), ("beta", T0 + 1), ("beta", T0 + 2)]
    assert [signal.status for signal in signals] == ["open", "closed"]
    await engine.stop()
    await running


async def test_an_event_whose_processing_raises_is_counted_and_the_next_one_is_processed() -> None:
    signals: list[Signal] = []
    engine = _engine(FlakyScorer(), signals)
    running = asyncio.get_running_loop().create_task(engine.run())
    await asyncio.sleep(0)
    broken = BookEvent.model_construct(venue="alpha")  # a bug upstream: built unvalidated, with no symbol at all
    engine.submit(broken)
    engine.submit(_book("alpha", T0 + 1, 99.0, 100.0))
    engine.submit(_book("beta", T0 + 2, 101.0, 102.0))
    assert engine.stats.event_errors == 1
    assert engine.stats.updates == 2
    assert [signal.status for signal in signals] == ["open"]
    await engine.stop()
    await running
