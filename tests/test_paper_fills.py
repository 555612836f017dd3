"""Leg simulation by hand: book walks with partial fills and fees, constant-product swaps with gas and reverts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.events import GasEvent, PoolEvent
from bot.paper.fills import GasPlan, gas_native, gas_price_gwei, swap, walk_book

ASKS = ((100.0, 1.0), (101.0, 2.0), (102.0, 5.0))
BIDS = ((99.0, 1.0), (98.0, 1.0))
TS = 1_763_700_000_000


def _pool(reserve_base: float = 100.0, reserve_quote: float = 200_000.0) -> PoolEvent:
    return PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool="0x" + "ab" * 20, symbol="ETH/USDT", base="ETH", quote="USDT",
        reserve_base=reserve_base, reserve_quote=reserve_quote, fee_bps=30.0, block=100, ts=TS,
    )  # fmt: skip


def _gas(base: float, tip: float = 1.0) -> GasEvent:
    return GasEvent(chain="ethereum", block=100, ts=TS, base_fee_gwei=base, priority_fee_gwei=tip, gas_used_ratio=0.5)


def test_a_buy_walks_two_levels_and_pays_the_taker_fee() -> None:
    leg = walk_book("alpha", "buy", ASKS, 2.5, 0.001, TS)
    assert leg.status == "filled"
    assert leg.size == 2.5
    assert leg.notional == pytest.approx(1 * 100.0 + 1.5 * 101.0)
    assert leg.price == pytest.approx(251.5 / 2.5)
    assert leg.fee == pytest.approx(0.2515)
    assert leg.base_delta == 2.5
    assert leg.quote_delta == pytest.approx(-251.5 - 0.2515)


def test_a_thin_book_fills_partially() -> None:
    leg = walk_book("alpha", "buy", ASKS, 10.0, 0.0, TS)
    assert (leg.status, leg.reason) == ("partial", "depth")
    assert leg.size == 8.0
    assert leg.notional == pytest.approx(100.0 + 202.0 + 510.0)


def test_a_limit_stops_the_walk() -> None:
    buy = walk_book("alpha", "buy", ASKS, 5.0, 0.0, TS, limit_price=101.0)
    assert (buy.status, buy.reason, buy.size) == ("partial", "limit", 3.0)
    assert buy.notional == pytest.approx(302.0)
    sell = walk_book("beta", "sell", BIDS, 1.5, 0.002, TS, limit_price=98.5)
    assert (sell.status, sell.size) == ("partial", 1.0)
    assert sell.quote_delta == pytest.approx(99.0 - 0.198)
    assert sell.base_delta == -1.0


def test_a_limit_through_the_touch_misses() -> None:
    leg = walk_book("alpha", "buy", ASKS, 1.0, 0.001, TS, limit_price=99.5)
    assert (leg.status, leg.size, leg.notional, leg.fee, leg.price) == ("missed", 0.0, 0.0, 0.0, 0.0)


def test_a_swap_buys_on_the_curve_with_the_fee_taken_from_the_input() -> None:
    leg = swap("uniswap_v2:0x" + "ab" * 20, "buy", _pool(), 1.0, 0.004, TS, limit_price=2030.0)
    # Uniswap V2 getAmountIn: R_q·out / ((R_b - out)·(1 - fee))
    assert leg.status == "filled"
    assert leg.notional == pytest.approx(200_000.0 * 1.0 / (99.0 * 0.997))
    assert leg.fee == 0.0
    assert leg.gas_native == 0.004


def test_a_swap_sells_on_the_curve() -> None:
    leg = swap("uniswap_v2:0x" + "ab" * 20, "sell", _pool(), 1.0, 0.004, TS, limit_price=1970.0)
    assert leg.status == "filled"
    assert leg.notional == pytest.approx(0.997 * 200_000.0 / (100.0 + 0.997))


def test_a_swap_past_its_tolerance_reverts_and_still_pays_gas() -> None:
    # 2026.2 per ETH on this pool; the trader would only pay 2020.
    leg = swap("uniswap_v2:0x" + "ab" * 20, "buy", _pool(), 1.0, 0.004, TS, limit_price=2020.0)
    assert (leg.status, leg.reason) == ("reverted", "tolerance")
    assert (leg.size, leg.notional, leg.base_delta, leg.quote_delta) == (0.0, 0.0, 0.0, 0.0)
    assert leg.gas_native == 0.004
    sell = swap("uniswap_v2:0x" + "ab" * 20, "sell", _pool(), 1.0, 0.004, TS, limit_price=1980.0)
    assert sell.status == "reverted"


def test_a_swap_larger_than_the_reserve_reverts() -> None:
    leg = swap("uniswap_v2:0x" + "ab" * 20, "buy", _pool(), 100.0, 0.004, TS)
    assert (leg.status, leg.reason, leg.size) == ("reverted", "liquidity", 0.0)


def test_gas_price_follows_eip_1559() -> None:
    assert gas_price_gwei(_gas(30.0), GasPlan(max_fee_gwei=40.0, priority_fee_gwei=2.0)) == 32.0
    assert gas_price_gwei(_gas(30.0), GasPlan(max_fee_gwei=31.0, priority_fee_gwei=2.0)) == 31.0
    assert gas_price_gwei(_gas(50.0), GasPlan(max_fee_gwei=40.0, priority_fee_gwei=2.0)) is None
    assert gas_price_gwei(_gas(30.0, tip=1.5), None) == 31.5
    assert gas_native(110_000, 32.0) == pytest.approx(0.00352)


_levels = st.lists(st.tuples(st.floats(1.0, 1e5), st.floats(1e-3, 1e3)), min_size=1, max_size=10).map(
    lambda raw: tuple(sorted(raw))
)


@given(_levels, st.floats(1e-3, 1e4), st.floats(0.0, 0.01))
def test_a_walk_never_takes_more_than_asked_or_offered_and_averages_within_the_prices_taken(
    levels: tuple[tuple[float, float], ...], size: float, fee: float
) -> None:
    leg = walk_book("alpha", "buy", levels, size, fee, TS)
    assert 0.0 < leg.size <= size * (1 + 1e-12)
    assert leg.size <= sum(available for _, available in levels) * (1 + 1e-9)
    assert levels[0][0] * (1 - 1e-9) <= leg.price <= levels[-1][0] * (1 + 1e-9)
    assert leg.fee == pytest.approx(leg.notional * fee)
    assert leg.status == ("filled" if leg.size >= size * (1 - 1e-12) else "partial")
