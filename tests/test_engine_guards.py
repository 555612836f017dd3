"""A failing engine listener or scorer costs its own work, never the engine, and never a wrong signal."""

from __future__ import annotations

from collections.abc import Sequence

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
