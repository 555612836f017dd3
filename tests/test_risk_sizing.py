"""Sizing: rounding never breaks lot, tick or minimum notional; the chosen size maximises expected PnL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.risk.sizing import SizingInputs, choose_size, expected_pnl, round_price, round_size
from bot.risk.slippage import walk_book

lots = st.sampled_from([1e-8, 1e-6, 1e-5, 1e-4, 0.001, 0.01, 0.1, 1.0, 5.0])
ticks = st.sampled_from([1e-8, 1e-5, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0])


def _whole_multiple(value: float, step: float) -> bool:
    quotient = Decimal(repr(value)) / Decimal(repr(step))
    return quotient == quotient.to_integral_value()


@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), lots)
def test_round_size_is_a_whole_lot_not_above_the_size(size: float, lot: float) -> None:
    rounded = round_size(size, lot)
    assert _whole_multiple(rounded, lot)
    assert rounded <= size * (1 + 1e-9)
    assert size - rounded < lot * (1 + 1e-9)


@given(st.floats(min_value=1e-6, max_value=1e7, allow_nan=False), ticks, st.sampled_from(["buy", "sell"]))
def test_round_price_is_on_the_tick_and_never_tighter(price: float, tick: float, side: str) -> None:
    rounded = round_price(price, tick, side)  # type: ignore[arg-type]
    assert _whole_multiple(rounded, tick)
    if side == "buy":
        assert rounded >= price * (1 - 1e-9)
        assert rounded - price < tick * (1 + 1e-9)
    else:
        assert rounded <= price * (1 + 1e-9)
        assert price - rounded < tick * (1 + 1e-9)


ASKS = ((100.0, 1.0), (100.5, 2.0), (101.0, 5.0))
BIDS = ((101.5, 1.0), (101.0, 2.0), (100.0, 5.0))


def _inputs(**overrides: object) -> SizingInputs:
    fields: dict[str, object] = {
        "probability": 0.8,
        "buy": lambda size: walk_book(ASKS, size),
        "sell": lambda size: walk_book(BIDS, size),
        "buy_fee": 0.0,
        "sell_fee": 0.0,
        "fixed_cost": 0.0,
        "inventory_cost": lambda _s, _b, _p: 0.0,
        "lot": 0.001,
        "min_notional": 10.0,
        "cap": 8.0,
    }
    fields.update(overrides)
    return SizingInputs(**fields)  # type: ignore[arg-type]


def test_choice_maximises_expected_pnl_over_every_lot() -> None:
    inputs = _inputs()
    choice, reason = choose_size(inputs, 400)
    assert reason is None
    assert choice is not None
    # Brute force over every 0.01 step: the grid's choice is within a hair of the best there is.
    best = max(
        (expected_pnl(inputs, round(0.01 * i, 2)) for i in range(1, 801)),
        key=lambda c: c.expected_pnl if c is not None else float("-inf"),
    )
    assert best is not None
    assert choice.expected_pnl >= best.expected_pnl - 0.02
    # By hand: the edge is 1.5 on the first unit, then 0.5 per unit up to 3 units, then nothing to gain.
    assert 2.9 <= choice.size <= 3.0 + 1e-9
    assert choice.expected_pnl == pytest.approx(0.8 * (1.5 + 0.5 + 0.5) * choice.size / 3.0, rel=0.05)


def test_fees_and_fixed_costs_shrink_or_kill_the_trade() -> None:
    choice, _ = choose_size(_inputs(fixed_cost=1.0), 200)
    assert choice is not None
    assert choice.expected_pnl == pytest.approx(0.8 * 2.5 - 1.0, abs=0.05)
    unprofitable, _ = choose_size(_inputs(fixed_cost=5.0), 200)
    assert unprofitable is not None
    assert unprofitable.expected_pnl < 0


def test_inventory_cost_moves_the_size() -> None:
    free, _ = choose_size(_inputs(), 200)
    taxed, _ = choose_size(_inputs(inventory_cost=lambda size, _b, _s: 0.4 * size), 200)
    assert free is not None
    assert taxed is not None
    assert taxed.size < free.size


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"cap": 0.0005}, "size_cap"),
        ({"min_notional": 1e6}, "below_min_notional"),
        ({"buy": lambda _size: None}, "no_liquidity"),
    ],
)
def test_no_size_reasons(overrides: dict[str, object], reason: str) -> None:
    choice, why = choose_size(_inputs(**overrides), 50)
    assert choice is None
    assert why == reason


@given(
    lots,
    st.floats(min_value=0.0, max_value=2_000.0),
    st.floats(min_value=0.0001, max_value=20.0),
    st.integers(min_value=2, max_value=64),
)
def test_chosen_size_keeps_lot_cap_and_min_notional(lot: float, min_notional: float, cap: float, count: int) -> None:
    choice, reason = choose_size(_inputs(lot=lot, min_notional=min_notional, cap=cap), count)
    if choice is None:
        assert reason in {"size_cap", "below_min_notional", "no_liquidity"}
        return
    assert _whole_multiple(choice.size, lot)
    assert lot <= choice.size <= cap * (1 + 1e-9)
    assert choice.size * min(choice.buy.avg_price, choice.sell.avg_price) >= min_notional


def test_a_buy_is_sized_down_to_what_the_quote_balance_pays() -> None:
    # 150 quote buys 1 unit at 100 and 0.5 more at 100.5 (the asks' second level), 1.4975 with a 0.1 % fee.
    choice, reason = choose_size(_inputs(max_buy_quote=150.0, buy_fee=0.001), 16)
    assert reason is None
    assert choice is not None
    spend = choice.size * choice.buy.avg_price * 1.001
    assert spend <= 150.0
    assert choice.size == pytest.approx((150.0 / 1.001 - 100.0) / 100.5 + 1.0, abs=0.001)


@pytest.mark.parametrize("budget", [0.0, 0.05, -5.0])
def test_no_affordable_size_is_insufficient_balance(budget: float) -> None:
    choice, why = choose_size(_inputs(max_buy_quote=budget), 50)
    assert choice is None
    assert why == "insufficient_balance"


@given(st.floats(min_value=0.0, max_value=2_000.0), st.floats(min_value=0.0001, max_value=8.0))
def test_the_chosen_buy_never_costs_more_than_the_budget(budget: float, cap: float) -> None:
    choice, reason = choose_size(_inputs(max_buy_quote=budget, cap=cap, min_notional=0.0, buy_fee=0.001), 24)
    if choice is None:
        assert reason in {"size_cap", "insufficient_balance"}
        return
    assert choice.size * choice.buy.avg_price * 1.001 <= budget * (1 + 1e-9)
