"""Depth walks against an exact brute-force reference (fractions, every level boundary)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.depth_walk import CrossWalk, cost_of, walk_cross

Levels = list[tuple[float, float]]


# ---------------------------------------------------------------- reference


def _exact(levels: Levels) -> list[tuple[Fraction, Fraction]]:
    return [(Fraction(price), Fraction(size)) for price, size in levels]


def _take(levels: list[tuple[Fraction, Fraction]], size: Fraction) -> Fraction:
    """Exact quote amount of the first `size` units of `levels` (caller keeps size within the book)."""
    total = Fraction(0)
    remaining = size
    for price, available in levels:
        if remaining <= 0:
            break
        part = min(available, remaining)
        total += part * price
        remaining -= part
    assert remaining <= 0, "reference asked for more than the book holds"
    return total


def _cumulative(levels: list[tuple[Fraction, Fraction]]) -> list[Fraction]:
    out, running = [], Fraction(0)
    for _, size in levels:
        running += size
        out.append(running)
    return out


@dataclass(frozen=True)
class Reference:
    best_profit: Fraction
    optimal_sizes: list[Fraction]  # every candidate size reaching (within a hair of) the best profit
    cap_size: Fraction  # largest size whose buy cost fits max_notional


def brute_force(asks: Levels, bids: Levels, buy_fee: float, sell_fee: float, max_notional: float) -> Reference:
    """Maximise net profit over size exactly.

    Cost and proceeds are piecewise linear in size with kinks only at cumulative level sizes, and the
    notional cap cuts the domain at one more point, so the maximum of profit over [0, cap] is reached at
    one of those points: evaluate them all.
    """
    ask_book, bid_book = _exact(asks), _exact(bids)
    bf, sf, cap = Fraction(buy_fee), Fraction(sell_fee), Fraction(max_notional)
    depth = min(sum(s for _, s in ask_book), sum(s for _, s in bid_book))
    cap_size, spent, filled = depth, Fraction(0), Fraction(0)
    for price, size in ask_book:
        if filled >= depth:
            break
        part = min(size, depth - filled)
        if spent + part * price > cap:
            cap_size = filled + (cap - spent) / price
            break
        spent += part * price
        filled += part
    kinks = {Fraction(0), cap_size, *_cumulative(ask_book), *_cumulative(bid_book)}
    candidates = sorted(s for s in kinks if s <= cap_size)

    def profit(size: Fraction) -> Fraction:
        return _take(bid_book, size) * (1 - sf) - _take(ask_book, size) * (1 + bf)

    profits = {s: profit(s) for s in candidates}
    best = max(profits.values())
    scale = max(Fraction(1), _take(ask_book, cap_size))
    hair = scale * Fraction(1, 10**12)
    return Reference(best, [s for s, p in profits.items() if p >= best - hair], cap_size)


# ---------------------------------------------------------------- generators

TICK = 0.05
price_ticks = st.lists(st.integers(min_value=-20, max_value=20), min_size=1, max_size=6, unique=True)
level_sizes = st.floats(min_value=0.001, max_value=5.0)
fees = st.floats(min_value=0.0, max_value=0.003)
notionals = st.floats(min_value=1.0, max_value=3_000.0)


@st.composite
def books(draw: st.DrawFn) -> tuple[Levels, Levels]:
    """Asks of one venue and bids of another, both around 100 so that they often cross."""
    asks = [(100.0 + k * TICK, draw(level_sizes)) for k in sorted(draw(price_ticks))]
    bids = [(100.0 + k * TICK, draw(level_sizes)) for k in sorted(draw(price_ticks), reverse=True)]
    return asks, bids


def _close(a: float, b: float | Fraction, scale: float) -> bool:
    return math.isclose(a, float(b), rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


# ---------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None)
@given(books(), fees, fees, notionals)
def test_walk_matches_brute_force_optimum(
    book: tuple[Levels, Levels], buy_fee: float, sell_fee: float, max_notional: float
) -> None:
    asks, bids = book
    walk = walk_cross(asks, bids, buy_fee, sell_fee, max_notional)
    ref = brute_force(asks, bids, buy_fee, sell_fee, max_notional)
    first_unit_pays = asks[0][0] * (1.0 + buy_fee) < bids[0][0] * (1.0 - sell_fee)

    assert (walk is not None) == first_unit_pays
    if walk is None:
        assert ref.best_profit <= Fraction(1e-9)
        return
    assert ref.best_profit > 0
    assert _close(walk.net_profit, ref.best_profit, walk.buy_cost)
    spread = max(ref.optimal_sizes) - min(ref.optimal_sizes)
    if spread <= Fraction(1, 10**12):  # the optimum is unique
        assert _close(walk.size, ref.optimal_sizes[0], 1.0)
    else:  # a flat stretch: any size on it is optimal
        assert min(ref.optimal_sizes) * (1 - Fraction(1, 10**9)) <= Fraction(walk.size)
        assert Fraction(walk.size) <= max(ref.optimal_sizes) * (1 + Fraction(1, 10**9))


@settings(max_examples=300, deadline=None)
@given(books(), fees, fees, notionals)
def test_walk_figures_are_consistent(
    book: tuple[Levels, Levels], buy_fee: float, sell_fee: float, max_notional: float
) -> None:
    asks, bids = book
    walk = walk_cross(asks, bids, buy_fee, sell_fee, max_notional)
    if walk is None:
        return
    cost, proceeds = walk.buy_cost, walk.sell_proceeds
    assert walk.size > 0
    assert cost <= max_notional * (1 + 1e-9) + 1e-9
    # The cost and proceeds are what the books charge and pay for that size (float sums may overshoot a hair).
    depth = min(sum(Fraction(s) for _, s in asks), sum(Fraction(s) for _, s in bids))
    assert Fraction(walk.size) <= depth * (1 + Fraction(1, 10**12))
    size = min(Fraction(walk.size), depth)
    assert _close(cost, _take(_exact(asks), size), cost)
    assert _close(proceeds, _take(_exact(bids), size), proceeds)
    assert _close(walk.fees, cost * buy_fee + proceeds * sell_fee, cost)
    assert _close(walk.net_profit, proceeds * (1 - sell_fee) - cost * (1 + buy_fee), cost)
    # Edges are in bps of the buy price, gross before fees and net after both fees.
    assert _close(walk.buy_vwap, cost / walk.size, 1.0)
    assert _close(walk.sell_vwap, proceeds / walk.size, 1.0)
    assert _close(walk.gross_edge_bps, (walk.sell_vwap - walk.buy_vwap) / walk.buy_vwap * 1e4, 1.0)
    assert _close(walk.net_edge_bps, walk.net_profit / cost * 1e4, 1.0)
    assert walk.net_edge_bps > 0
    assert walk.gross_edge_bps >= walk.net_edge_bps
    # VWAPs lie between the touch and the deepest level taken.
    assert asks[0][0] * (1 - 1e-12) <= walk.buy_vwap <= asks[-1][0] * (1 + 1e-12)
    assert bids[-1][0] * (1 - 1e-12) <= walk.sell_vwap <= bids[0][0] * (1 + 1e-12)
    assert walk.sell_vwap * (1 - sell_fee) > walk.buy_vwap * (1 + buy_fee)


@settings(max_examples=200, deadline=None)
@given(books(), fees, fees)
def test_cap_binds_exactly_when_the_uncapped_walk_spends_more(
    book: tuple[Levels, Levels], buy_fee: float, sell_fee: float
) -> None:
    asks, bids = book
    free = walk_cross(asks, bids, buy_fee, sell_fee, math.inf)
    if free is None:
        return
    cap = free.buy_cost / 2
    capped = walk_cross(asks, bids, buy_fee, sell_fee, cap)
    assert capped is not None
    assert math.isclose(capped.buy_cost, cap, rel_tol=1e-9)
    assert capped.size < free.size
    roomy = walk_cross(asks, bids, buy_fee, sell_fee, free.buy_cost * 2)
    assert roomy is not None
    assert math.isclose(roomy.size, free.size, rel_tol=1e-12)


# ---------------------------------------------------------------- hand-computed walks


def test_walk_without_fees_stops_where_bid_meets_ask() -> None:
    # asks 100 x1, 101 x2; bids 102 x1.5, 100.5 x1; no fees.
    # 1.0 at 100 against 102, then 0.5 at 101 against 102; next bid 100.5 < ask 101: stop.
    # size 1.5, cost 100 + 50.5 = 150.5, proceeds 102 * 1.5 = 153, profit 2.5.
    walk = walk_cross([(100.0, 1.0), (101.0, 2.0)], [(102.0, 1.5), (100.5, 1.0)], 0.0, 0.0, 1e9)
    assert walk is not None
    assert walk.size == pytest.approx(1.5)
    assert walk.buy_cost == pytest.approx(150.5)
    assert walk.sell_proceeds == pytest.approx(153.0)
    assert walk.fees == 0.0
    assert walk.net_profit == pytest.approx(2.5)
    assert walk.gross_edge_bps == pytest.approx(2.5 / 150.5 * 1e4)  # 166.11 bps


def test_walk_with_fees_stops_where_the_next_unit_loses() -> None:
    # buy fee 10 bps, sell fee 20 bps.
    # First unit: bid 100.5 * 0.998 = 100.299 > ask 100 * 1.001 = 100.1: take 1.
    # Next: bid 100.4 * 0.998 = 100.1992 < ask 100.2 * 1.001 = 100.3002: stop, though 100.4 > 100.2 gross.
    # fees = 100 * 0.001 + 100.5 * 0.002 = 0.1 + 0.201 = 0.301; net = 0.5 - 0.301 = 0.199 -> 19.9 bps of 100.
    walk = walk_cross([(100.0, 1.0), (100.2, 1.0)], [(100.5, 1.0), (100.4, 1.0)], 0.001, 0.002, 1e9)
    assert walk is not None
    assert walk.size == pytest.approx(1.0)
    assert walk.fees == pytest.approx(0.301)
    assert walk.net_profit == pytest.approx(0.199)
    assert walk.net_edge_bps == pytest.approx(19.9)
    assert walk.gross_edge_bps == pytest.approx(50.0)


def test_walk_stops_at_max_notional() -> None:
    # asks 100 x10, bids 110 x10, cap 250 quote: size 250 / 100 = 2.5, proceeds 2.5 * 110 = 275.
    walk = walk_cross([(100.0, 10.0)], [(110.0, 10.0)], 0.0, 0.0, 250.0)
    assert walk is not None
    assert walk.size == pytest.approx(2.5)
    assert walk.buy_cost == pytest.approx(250.0)
    assert walk.sell_proceeds == pytest.approx(275.0)


def test_walk_is_none_when_fees_eat_the_gap() -> None:
    # 5 bps each side: ask 100 * 1.0005 = 100.05 > bid 100.1 * 0.9995 = 100.04995.
    assert walk_cross([(100.0, 1.0)], [(100.1, 1.0)], 0.0005, 0.0005, 1e9) is None
    # Without fees the same books pay 0.1.
    walk = walk_cross([(100.0, 1.0)], [(100.1, 1.0)], 0.0, 0.0, 1e9)
    assert isinstance(walk, CrossWalk)
    assert walk.net_profit == pytest.approx(0.1)


@pytest.mark.parametrize(("asks", "bids"), [([], [(101.0, 1.0)]), ([(100.0, 1.0)], []), ([], [])])
def test_walk_of_an_empty_side_is_none(asks: Levels, bids: Levels) -> None:
    assert walk_cross(asks, bids, 0.0, 0.0, 1e9) is None


def test_walk_is_none_when_bid_equals_ask_without_fees() -> None:
    assert walk_cross([(100.0, 1.0)], [(100.0, 1.0)], 0.0, 0.0, 1e9) is None


# ---------------------------------------------------------------- cost_of


@st.composite
def ask_levels(draw: st.DrawFn) -> Levels:
    ticks = sorted(draw(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=8, unique=True)))
    return [(k * 0.01, draw(level_sizes)) for k in ticks]


@given(ask_levels(), st.floats(min_value=1e-6, max_value=1.0))
def test_cost_of_matches_exact_sum(levels: Levels, fraction: float) -> None:
    depth = sum(size for _, size in levels)
    size = depth * fraction
    cost = cost_of(levels, size)
    assert cost is not None
    expected = _take(_exact(levels), min(Fraction(size), sum(Fraction(s) for _, s in levels)))
    assert math.isclose(cost, float(expected), rel_tol=1e-9)


@given(ask_levels(), st.floats(min_value=1e-6, max_value=10.0))
def test_cost_of_is_none_when_the_book_is_too_thin(levels: Levels, excess: float) -> None:
    depth = sum(size for _, size in levels)
    assert cost_of(levels, depth * (1.0 + excess)) is None


def test_cost_of_by_hand() -> None:
    levels = [(100.0, 1.0), (101.0, 2.0)]
    assert cost_of(levels, 0.5) == pytest.approx(50.0)  # 0.5 * 100
    assert cost_of(levels, 2.5) == pytest.approx(251.5)  # 100 * 1 + 101 * 1.5
    assert cost_of(levels, 3.0) == pytest.approx(302.0)  # 100 * 1 + 101 * 2, the whole book
    assert cost_of(levels, 3.0001) is None
    assert cost_of([], 1.0) is None
