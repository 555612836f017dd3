"""The cex_cex strategy on real market state, the opportunity lifecycle, and the rule scorer."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.bus.codec import decode_message, encode
from bot.config import CexCexConfig, RuleScorerConfig
from bot.events import BookEvent
from bot.market_state import MarketState
from bot.messages import Signal
from bot.opportunities import OpportunityTracker
from bot.rejections import RejectionCounter
from bot.scoring.rule import RuleScorer
from strategies.base import Evaluation
from strategies.cex_cex import CexCexStrategy

BTC, ETH = "BTC/USDT", "ETH/USDT"
T0 = 1_763_700_000_000


def book(
    venue: str,
    symbol: str,
    ts: int,
    bids: Iterable[tuple[float, float]],
    asks: Iterable[tuple[float, float]],
) -> BookEvent:
    return BookEvent(venue=venue, symbol=symbol, ts=ts, bids=tuple(bids), asks=tuple(asks))


def market() -> tuple[MarketState, RejectionCounter]:
    rejections = RejectionCounter()
    return MarketState(rejections), rejections


def strategy(fees_bps: float = 0.0, **config: float) -> CexCexStrategy:
    return CexCexStrategy(CexCexConfig(**config), {"alpha": fees_bps, "beta": fees_bps, "gamma": fees_bps})


def feed(state: MarketState, strat: CexCexStrategy, event: BookEvent) -> list[Evaluation]:
    assert state.apply(event)
    return strat.on_book(state, event)


def only(evaluations: list[Evaluation], buy: str, sell: str) -> Evaluation:
    matches = [e for e in evaluations if (e.buy_venue, e.sell_venue) == (buy, sell)]
    assert len(matches) == 1, evaluations
    return matches[0]


# ---------------------------------------------------------------- strategy


def test_book_update_evaluates_only_its_own_symbol() -> None:
    state, _ = market()
    strat = strategy()
    for venue, shift in (("alpha", 0.0), ("beta", 5.0), ("gamma", -5.0)):
        feed(state, strat, book(venue, BTC, T0, [(97000.0 + shift, 1.0)], [(97001.0 + shift, 1.0)]))
    feed(state, strat, book("alpha", ETH, T0, [(3400.0, 1.0)], [(3400.5, 1.0)]))
    evaluations = feed(state, strat, book("beta", ETH, T0 + 1, [(3402.0, 1.0)], [(3402.5, 1.0)]))
    assert evaluations
    assert all(e.symbol == ETH for e in evaluations)
    # beta against the one other ETH venue, both directions; gamma has no ETH book.
    assert {(e.buy_venue, e.sell_venue) for e in evaluations} == {("alpha", "beta"), ("beta", "alpha")}
    assert all(e.ts == T0 + 1 for e in evaluations)


def test_first_book_of_a_symbol_has_nothing_to_pair_with() -> None:
    state, _ = market()
    assert feed(state, strategy(), book("alpha", BTC, T0, [(100.0, 1.0)], [(101.0, 1.0)])) == []


def test_buys_on_the_cheaper_venue() -> None:
    state, _ = market()
    strat = strategy()
    feed(state, strat, book("alpha", BTC, T0, [(99.0, 1.0)], [(100.0, 1.0)]))
    evaluations = feed(state, strat, book("beta", BTC, T0 + 5, [(101.0, 1.0)], [(102.0, 1.0)]))
    good = only(evaluations, "alpha", "beta")
    bad = only(evaluations, "beta", "alpha")
    assert good.tradeable
    assert good.size == pytest.approx(1.0)
    assert good.buy_price == pytest.approx(100.0)
    assert good.sell_price == pytest.approx(101.0)
    assert good.buy_book_ts == T0
    assert good.sell_book_ts == T0 + 5
    assert not bad.tradeable
    assert bad.size == 0.0
    assert bad.net_edge_bps < 0


def test_size_stops_where_the_marginal_edge_after_fees_runs_out() -> None:
    # 10 bps taker fee on both venues. Sell on beta at 101 (x5), buy on alpha's asks:
    #   100.0 * 1.001 = 100.1    < 101 * 0.999 = 100.899: the first unit pays;
    #   100.5 * 1.001 = 100.6005 < 100.899: the second unit pays;
    #   100.9 * 1.001 = 101.0009 > 100.899: the third does not, though 100.9 < 101 before fees.
    asks = [(100.0, 1.0), (100.5, 1.0), (100.9, 1.0)]
    buy_book = book("alpha", BTC, T0, [(99.0, 1.0)], asks)
    sell_book = book("beta", BTC, T0, [(101.0, 5.0)], [(102.0, 1.0)])
    with_fees = strategy(fees_bps=10.0).evaluate(buy_book, sell_book, T0)
    without_fees = strategy(fees_bps=0.0).evaluate(buy_book, sell_book, T0)
    assert with_fees.size == pytest.approx(2.0)
    assert without_fees.size == pytest.approx(3.0)
    # fees = (100 + 100.5) * 0.001 + 202 * 0.001 = 0.4025; net = 202 - 200.5 - 0.4025 = 1.0975 on 200.5 bought.
    assert with_fees.fees == pytest.approx(0.4025)
    assert with_fees.net_edge_bps == pytest.approx(1.0975 / 200.5 * 1e4)
    assert with_fees.gross_edge_bps == pytest.approx(1.5 / 200.5 * 1e4)


def test_max_notional_caps_the_buy_notional() -> None:
    buy_book = book("alpha", BTC, T0, [(99.0, 1.0)], [(100.0, 50.0)])
    sell_book = book("beta", BTC, T0, [(105.0, 50.0)], [(106.0, 1.0)])
    evaluation = strategy(max_notional=1_000.0).evaluate(buy_book, sell_book, T0)
    assert evaluation.size * evaluation.buy_price == pytest.approx(1_000.0)
    assert evaluation.size == pytest.approx(10.0)
    roomy = strategy(max_notional=1e9).evaluate(buy_book, sell_book, T0)
    assert roomy.size == pytest.approx(50.0)


def test_no_gap_is_not_tradeable_and_reports_touch_prices() -> None:
    state, _ = market()
    strat = strategy(fees_bps=5.0)
    feed(state, strat, book("alpha", BTC, T0, [(99.9, 1.0)], [(100.0, 1.0)]))
    evaluations = feed(state, strat, book("beta", BTC, T0, [(100.05, 1.0)], [(100.2, 1.0)]))
    ev = only(evaluations, "alpha", "beta")  # 5 bps gross, 10 bps of fees
    assert not ev.tradeable
    assert ev.size == 0.0
    assert ev.buy_price == 100.0
    assert ev.sell_price == 100.05
    assert ev.gross_edge_bps == pytest.approx(5.0)
    assert ev.net_edge_bps < 0


# ---------------------------------------------------------------- market state


def test_market_state_rejects_an_older_book() -> None:
    state, rejections = market()
    newer = book("alpha", BTC, T0 + 100, [(100.0, 1.0)], [(101.0, 1.0)])
    older = book("alpha", BTC, T0, [(90.0, 1.0)], [(91.0, 1.0)])
    assert state.apply(newer)
    assert not state.apply(older)
    assert state.book("alpha", BTC) == newer
    assert rejections.count("alpha", "out_of_order") == 1
    assert rejections.by_reason() == {"out_of_order": 1}
    # Another venue or symbol keeps its own clock.
    assert state.apply(book("beta", BTC, T0, [(100.0, 1.0)], [(101.0, 1.0)]))
    assert state.apply(book("alpha", ETH, T0, [(100.0, 1.0)], [(101.0, 1.0)]))
    assert rejections.total == 1
    assert sorted(state.venues_for(BTC)) == ["alpha", "beta"]


# ---------------------------------------------------------------- tracker lifecycle


class Pipeline:
    """Market state, strategy, scorer and tracker wired the way the engine wires them."""

    def __init__(self, config: CexCexConfig) -> None:
        self.state, _ = market()
        self.strategy = CexCexStrategy(config, {"alpha": 0.0, "beta": 0.0})
        self.scorer = RuleScorer(RuleScorerConfig())
        self.tracker = OpportunityTracker(config)

    def on_book(self, event: BookEvent) -> list[Signal]:
        signals = []
        for evaluation in feed(self.state, self.strategy, event):
            score = self.scorer.score(evaluation) if evaluation.tradeable else None
            if (signal := self.tracker.observe(evaluation, score)) is not None:
                signals.append(signal)
        return signals


def _beta(ts: int, bid: float) -> BookEvent:
    return book("beta", BTC, ts, [(bid, 1.0)], [(bid + 1.0, 1.0)])


def test_opportunity_lifecycle() -> None:
    # step_score 1.0 and a large size step: only the net edge can make a change material here.
    config = CexCexConfig(min_net_edge_bps=1.0, step_edge_bps=1.0, step_score=1.0, step_size_fraction=100.0)
    pipe = Pipeline(config)
    assert pipe.on_book(book("alpha", BTC, T0, [(99.0, 1.0)], [(100.0, 1.0)])) == []

    # Gap of 100 bps: open.
    (opened,) = pipe.on_book(_beta(T0 + 10, 101.0))
    assert opened.status == "open"
    assert (opened.buy_venue, opened.sell_venue) == ("alpha", "beta")
    assert opened.net_edge_bps == pytest.approx(100.0)
    assert decode_message(encode(opened)) == opened

    # 0.5 bps move: immaterial, no signal.
    assert pipe.on_book(_beta(T0 + 20, 101.005)) == []

    # 1.5 bps more than the last signal: update, same opportunity.
    (updated,) = pipe.on_book(_beta(T0 + 30, 101.015))
    assert updated.status == "update"
    assert updated.opportunity_id == opened.opportunity_id
    assert updated.id != opened.id
    assert updated.net_edge_bps == pytest.approx(101.5)

    # The step is measured from the last signal sent, not from the last book: 0.9 bps, then 0.9 bps more.
    assert pipe.on_book(_beta(T0 + 40, 101.024)) == []
    (drifted,) = pipe.on_book(_beta(T0 + 50, 101.033))
    assert drifted.status == "update"
    assert drifted.opportunity_id == opened.opportunity_id

    # The gap disappears: closed, same opportunity.
    (closed,) = pipe.on_book(_beta(T0 + 60, 99.5))
    assert closed.status == "closed"
    assert closed.opportunity_id == opened.opportunity_id
    assert closed.ts == T0 + 60
    assert decode_message(encode(closed)) == closed
    assert pipe.tracker.open_count == 0

    # Still no gap: nothing to say.
    assert pipe.on_book(_beta(T0 + 70, 99.6)) == []

    # A new gap later: a new opportunity.
    (reopened,) = pipe.on_book(_beta(T0 + 80, 101.0))
    assert reopened.status == "open"
    assert reopened.opportunity_id != opened.opportunity_id
    assert pipe.tracker.open_count == 1


def test_gap_below_min_net_edge_is_not_signalled_and_closes_an_open_one() -> None:
    config = CexCexConfig(min_net_edge_bps=50.0)
    pipe = Pipeline(config)
    pipe.on_book(book("alpha", BTC, T0, [(99.0, 1.0)], [(100.0, 1.0)]))
    assert pipe.on_book(_beta(T0 + 1, 100.3)) == []  # 30 bps: a gap, but below the threshold
    (opened,) = pipe.on_book(_beta(T0 + 2, 101.0))  # 100 bps
    (closed,) = pipe.on_book(_beta(T0 + 3, 100.3))  # back to 30 bps
    assert (opened.status, closed.status) == ("open", "closed")
    assert closed.opportunity_id == opened.opportunity_id
    assert closed.size > 0


def test_score_change_alone_is_material() -> None:
    # Same books, but the two books drift apart in time: the score falls, the edge does not move.
    config = CexCexConfig(step_edge_bps=1_000.0, step_size_fraction=100.0, step_score=0.05)
    pipe = Pipeline(config)
    pipe.on_book(book("alpha", BTC, T0, [(99.0, 1.0)], [(100.0, 1.0)]))
    (opened,) = pipe.on_book(_beta(T0, 101.0))
    assert pipe.on_book(_beta(T0 + 1, 101.0)) == []
    (updated,) = pipe.on_book(_beta(T0 + 400, 101.0))
    assert updated.status == "update"
    assert updated.score < opened.score - 0.05
    assert updated.net_edge_bps == pytest.approx(opened.net_edge_bps)


def test_tracker_requires_a_score_for_tradeable_evaluations() -> None:
    evaluation = _evaluation(net_edge_bps=10.0, skew_ms=0)
    with pytest.raises(ValueError, match="score"):
        OpportunityTracker(CexCexConfig()).observe(evaluation, None)


def test_close_all_closes_every_open_opportunity() -> None:
    pipe = Pipeline(CexCexConfig())
    pipe.on_book(book("alpha", BTC, T0, [(99.0, 1.0)], [(100.0, 1.0)]))
    (opened,) = pipe.on_book(_beta(T0 + 1, 101.0))
    (closed,) = pipe.tracker.close_all(T0 + 99)
    assert closed.status == "closed"
    assert closed.opportunity_id == opened.opportunity_id
    assert closed.id != opened.id
    assert closed.ts == T0 + 99
    assert pipe.tracker.open_count == 0
    assert pipe.tracker.close_all(T0 + 100) == []


# ---------------------------------------------------------------- rule scorer


def _evaluation(net_edge_bps: float, skew_ms: int) -> Evaluation:
    return Evaluation(
        kind="cex_cex",
        symbol=BTC,
        buy_venue="alpha",
        sell_venue="beta",
        ts=T0 + skew_ms,
        buy_book_ts=T0,
        sell_book_ts=T0 + skew_ms,
        size=1.0,
        buy_price=100.0,
        sell_price=100.0 * (1 + net_edge_bps / 1e4),
        gross_edge_bps=net_edge_bps,
        net_edge_bps=net_edge_bps,
        fees=0.0,
        tradeable=True,
    )


def _score(net_edge_bps: float, skew_ms: int) -> float:
    return RuleScorer(RuleScorerConfig()).score(_evaluation(net_edge_bps, skew_ms)).score


edges = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
skews = st.integers(min_value=-(10**7), max_value=10**7)


@settings(max_examples=200)
@given(edges, skews)
def test_score_is_a_probability(net_edge_bps: float, skew_ms: int) -> None:
    result = RuleScorer(RuleScorerConfig()).score(_evaluation(net_edge_bps, skew_ms))
    assert 0.0 <= result.score <= 1.0
    assert math.isfinite(result.expected_lifetime_ms)
    assert result.expected_lifetime_ms >= 0.0
    assert math.isfinite(result.expected_edge_bps)
    assert result.model == "rule"


@settings(max_examples=200)
@given(edges, edges, st.integers(min_value=0, max_value=5_000))
def test_score_never_falls_as_the_edge_widens(a: float, b: float, skew_ms: int) -> None:
    low, high = sorted((a, b))
    assert _score(low, skew_ms) <= _score(high, skew_ms)


@settings(max_examples=200)
@given(st.floats(min_value=-20.0, max_value=20.0), st.floats(min_value=0.01, max_value=5.0), st.integers(0, 1_000))
def test_score_rises_with_the_edge_in_the_working_range(edge: float, step: float, skew_ms: int) -> None:
    assert _score(edge, skew_ms) < _score(edge + step, skew_ms)


@settings(max_examples=200)
@given(st.floats(min_value=-20.0, max_value=20.0), st.integers(0, 2_000), st.integers(1, 2_000))
def test_score_falls_as_the_books_drift_apart(edge: float, skew_ms: int, more: int) -> None:
    assert _score(edge, skew_ms) > _score(edge, skew_ms + more)
    # Only the size of the gap between the two books matters, not which one is older.
    assert _score(edge, skew_ms) == _score(edge, -skew_ms)
