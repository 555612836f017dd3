"""The dex_dex strategy: constant-product sizing against brute force, pool fees and gas, and no gas no evaluation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.events import GasEvent, PoolEvent
from bot.market_state import MarketState
from bot.rejections import RejectionCounter
from strategies.amm import amount_out
from strategies.base import Evaluation
from strategies.dex_dex import DexDexConfig, DexDexStrategy, cycle, optimal_quote_in

T0 = 1_704_412_823_000
A, B, C = "0xaaaa", "0xbbbb", "0xcccc"


def pool(
    address: str,
    reserve_base: float,
    price: float,
    fee_bps: float,
    *,
    symbol: str = "ETH/USDC",
    chain: str = "ethereum",
    block: int = 18_937_382,
) -> PoolEvent:
    base, quote = symbol.split("/")
    return PoolEvent(
        chain=chain,
        dex="uniswap_v3",
        pool=address,
        symbol=symbol,
        base=base,
        quote=quote,
        reserve_base=reserve_base,
        reserve_quote=reserve_base * price,
        fee_bps=fee_bps,
        block=block,
        ts=T0 + block - 18_937_382,
    )


def gas(base_fee_gwei: float, priority_fee_gwei: float = 1.0, chain: str = "ethereum") -> GasEvent:
    return GasEvent(
        chain=chain,
        block=18_937_382,
        ts=T0,
        base_fee_gwei=base_fee_gwei,
        priority_fee_gwei=priority_fee_gwei,
        gas_used_ratio=0.5,
    )


def market(*events: PoolEvent | GasEvent) -> MarketState:
    state = MarketState(RejectionCounter())
    for event in events:
        assert state.apply_pool(event) if isinstance(event, PoolEvent) else state.apply_gas(event)
    return state


def only(evaluations: list[Evaluation], buy: str, sell: str) -> Evaluation:
    matches = [e for e in evaluations if (e.buy_venue, e.sell_venue) == (f"uniswap_v3:{buy}", f"uniswap_v3:{sell}")]
    assert len(matches) == 1, evaluations
    return matches[0]


def net_profit(evaluation: Evaluation) -> float:
    """Proceeds - cost - gas, from the evaluation's own fields (0 for no trade)."""
    if evaluation.size == 0.0:
        return 0.0
    return evaluation.size * (evaluation.sell_price - evaluation.buy_price) - evaluation.fees - evaluation.gas


def test_hand_computed_cycle() -> None:
    # Buy pool A: 100 ETH, 100,000 USDC (1,000 USDC/ETH). Sell pool B: 100 ETH, 225,000 USDC (2,250). No pool fees.
    # a = x_A·y_B = 100·225,000 = 22,500,000; b = x_B·y_A = 100·100,000 = 10,000,000; c = x_B + x_A = 200.
    # q* = (√(a·b) - b)/c = (√(2.25e14) - 1e7)/200 = (15,000,000 - 10,000,000)/200 = 25,000 USDC in.
    # Pool A gives 100·25,000/(100,000 + 25,000) = 20 ETH (avg 1,250); pool B gives 225,000·20/(100 + 20) = 37,500
    # USDC (avg 1,875). Both pools end at 1,562.5 USDC/ETH (125,000/80 = 187,500/120). Profit 12,500 USDC.
    # Gas: 2 swaps · 120,000 gas · (20 + 1) gwei = 5,040,000 gwei = 0.00504 ETH, at pool B's 2,250 = 11.34 USDC.
    # Net 12,488.66 USDC on a 25,000 USDC buy: 4,995.464 bps. Gross (1,875 - 1,250)/1,250 = 5,000 bps.
    buy, sell = pool(A, 100, 1_000, 0), pool(B, 100, 2_250, 0, block=18_937_383)
    strategy = DexDexStrategy(DexDexConfig(max_notional=1e9))
    evaluation = only(strategy.on_pool(market(buy, sell, gas(20)), sell), A, B)
    assert evaluation.kind == "dex_dex" and evaluation.symbol == "ETH/USDC" and evaluation.tradeable
    assert (evaluation.ts, evaluation.buy_book_ts, evaluation.sell_book_ts) == (sell.ts, buy.ts, sell.ts)
    assert evaluation.size == pytest.approx(20.0, rel=1e-12)
    assert evaluation.buy_price == pytest.approx(1_250.0, rel=1e-12)
    assert evaluation.sell_price == pytest.approx(1_875.0, rel=1e-12)
    assert evaluation.fees == 0.0
    assert evaluation.gas == pytest.approx(11.34, rel=1e-12)
    assert (evaluation.base_fee_gwei, evaluation.priority_fee_gwei) == (20.0, 1.0)
    assert evaluation.gross_edge_bps == pytest.approx(5_000.0, rel=1e-12)
    assert evaluation.net_edge_bps == pytest.approx(4_995.464, rel=1e-12)
    assert net_profit(evaluation) == pytest.approx(12_488.66, rel=1e-12)
    # The other direction (buy at 2,250, sell at 1,000) pays nothing: size 0 at the marginal prices.
    back = only(strategy.on_pool(market(buy, sell, gas(20)), sell), B, A)
    assert (back.size, back.buy_price, back.sell_price, back.tradeable) == (0.0, 2_250.0, 1_000.0, False)


def test_pool_fees_are_reported_in_quote_and_reconcile_cost_and_proceeds() -> None:
    buy, sell = pool(A, 262_000, 2_250, 5), pool(B, 120_000, 2_250 * 1.01, 30)
    quote_in = optimal_quote_in(buy, sell)
    trade = cycle(buy, sell, quote_in)
    evaluation = DexDexStrategy(DexDexConfig(max_notional=1e9)).evaluate(buy, sell, gas(20), 11.34, T0)
    assert evaluation.size == pytest.approx(trade.base, rel=1e-12)
    assert evaluation.size * evaluation.buy_price + trade.buy_fee == pytest.approx(quote_in, rel=1e-12)
    assert evaluation.size * evaluation.sell_price - trade.sell_fee == pytest.approx(trade.quote_out, rel=1e-12)
    assert evaluation.fees == pytest.approx(quote_in * 5e-4 + trade.quote_out * 30e-4 / (1 - 30e-4), rel=1e-12)
    # Without fees the same trade would have bought more base and sold it for more quote.
    assert amount_out(buy.reserve_quote, buy.reserve_base, quote_in, 0.0) > trade.base


def test_size_is_capped_by_max_notional() -> None:
    buy, sell = pool(A, 100, 1_000, 0), pool(B, 100, 2_250, 0)
    evaluation = DexDexStrategy(DexDexConfig(max_notional=5_000)).evaluate(buy, sell, gas(20), 11.34, T0)
    assert evaluation.tradeable
    # 5,000 USDC into pool A: 100·5,000/105,000 ETH.
    assert evaluation.size == pytest.approx(100 * 5_000 / 105_000, rel=1e-12)
    assert evaluation.size * evaluation.buy_price == pytest.approx(5_000, rel=1e-12)


def test_gas_decides_a_marginal_gap() -> None:
    # Virtual reserves like the two real pools: 0.05% with 262k ETH, 0.3% with 120k ETH, 45 bps apart. The gap
    # beats the 35 bps of pool fees by ~10 bps; the best trade (91.5k USDC in) makes ~45 USDC before gas.
    cheap, dear = pool(A, 262_000, 2_250, 5), pool(B, 120_000, 2_250 * 1.0045, 30, block=18_937_383)
    strategy = DexDexStrategy(DexDexConfig(min_net_edge_bps=1.0, max_notional=1e6))
    # 240,000 gas at 100 + 1 gwei = 0.02424 ETH = 54.6 USDC: more than the gap pays.
    expensive = only(strategy.on_pool(market(cheap, dear, gas(100)), dear), A, B)
    assert not expensive.tradeable
    assert expensive.size == 0.0
    assert expensive.gas == pytest.approx(240_000 * 101e-9 * dear.price, rel=1e-12)
    assert expensive.net_edge_bps > 0  # the marginal edge after pool fees is still there; gas is what kills it
    # At 20 + 1 gwei (11.4 USDC) the same gap pays ~33.7 USDC, ~3.7 bps.
    affordable = only(strategy.on_pool(market(cheap, dear, gas(20)), dear), A, B)
    assert affordable.tradeable
    assert affordable.size * affordable.buy_price == pytest.approx(91_484 - 45.7, rel=1e-3)
    assert net_profit(affordable) == pytest.approx(45.08 - affordable.gas, rel=1e-3)
    assert 3.0 < affordable.net_edge_bps < 4.5 < affordable.gross_edge_bps
    # A higher threshold turns the same trade down.
    picky = DexDexStrategy(DexDexConfig(min_net_edge_bps=5.0, max_notional=1e6))
    assert not only(picky.on_pool(market(cheap, dear, gas(20)), dear), A, B).tradeable


def test_no_gas_no_evaluation() -> None:
    cheap, dear = pool(A, 100, 1_000, 5), pool(B, 100, 2_250, 30)
    strategy = DexDexStrategy(DexDexConfig())
    assert strategy.on_pool(market(cheap, dear), dear) == []
    assert strategy.on_pool(market(cheap, dear, gas(20, chain="arbitrum")), dear) == []
    assert len(strategy.on_pool(market(cheap, dear, gas(20)), dear)) == 2


def test_only_pools_of_the_same_symbol_and_chain_pair_up() -> None:
    strategy = DexDexStrategy(DexDexConfig())
    alone = pool(A, 100, 2_250, 5)
    other_chain = pool(B, 100, 2_300, 5, chain="arbitrum")
    other_symbol = pool(C, 100, 2_300, 5, symbol="ETH/USDT")
    assert strategy.on_pool(market(alone, other_chain, other_symbol, gas(20)), alone) == []
    third = pool(C, 100, 2_300, 30)
    evaluations = strategy.on_pool(market(alone, pool(B, 100, 2_260, 30), third, gas(20)), third)
    assert {(e.buy_venue, e.sell_venue) for e in evaluations} == {
        (f"uniswap_v3:{A}", f"uniswap_v3:{C}"),
        (f"uniswap_v3:{C}", f"uniswap_v3:{A}"),
        (f"uniswap_v3:{B}", f"uniswap_v3:{C}"),
        (f"uniswap_v3:{C}", f"uniswap_v3:{B}"),
    }


def test_gas_is_priced_through_an_eth_pool_when_eth_is_not_in_the_pair() -> None:
    strategy = DexDexStrategy(DexDexConfig(max_notional=1e9))
    cheap, dear = pool(A, 10, 40_000, 5, symbol="WBTC/USDC"), pool(B, 10, 50_000, 5, symbol="WBTC/USDC")
    assert strategy.on_pool(market(cheap, dear, gas(20)), dear) == []  # no ETH/USDC pool to price gas in USDC
    eth = pool(C, 1_000, 2_000, 5)
    evaluation = only(strategy.on_pool(market(cheap, dear, eth, gas(20)), dear), A, B)
    assert evaluation.gas == pytest.approx(240_000 * 21e-9 * 2_000, rel=1e-12)
    # Quoted in ETH, gas needs no conversion.
    in_eth = pool(A, 10, 20, 5, symbol="WBTC/ETH"), pool(B, 10, 25, 5, symbol="WBTC/ETH")
    evaluation = only(strategy.on_pool(market(*in_eth, gas(20)), in_eth[1]), A, B)
    assert evaluation.gas == pytest.approx(240_000 * 21e-9, rel=1e-12)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_notional"):
        DexDexConfig(max_notional=0.0)
    with pytest.raises(ValueError, match="gas_units_per_swap"):
        DexDexConfig(gas_units_per_swap=0)


@settings(max_examples=300, deadline=None)
@given(
    reserve_a=st.floats(min_value=1.0, max_value=1e6),
    reserve_b=st.floats(min_value=1.0, max_value=1e6),
    price=st.floats(min_value=10.0, max_value=10_000.0),
    gap_bps=st.floats(min_value=-300.0, max_value=300.0),
    fee_a=st.sampled_from([0.0, 1.0, 5.0, 30.0, 100.0]),
    fee_b=st.sampled_from([0.0, 1.0, 5.0, 30.0, 100.0]),
    base_fee_gwei=st.floats(min_value=0.0, max_value=500.0),
    max_notional=st.floats(min_value=100.0, max_value=1e8),
)
def test_chosen_size_beats_every_size_on_a_grid(
    reserve_a: float,
    reserve_b: float,
    price: float,
    gap_bps: float,
    fee_a: float,
    fee_b: float,
    base_fee_gwei: float,
    max_notional: float,
) -> None:
    buy, sell = pool(A, reserve_a, price, fee_a), pool(B, reserve_b, price * (1 + gap_bps / 1e4), fee_b)
    gas_event = gas(base_fee_gwei)
    gas_quote = 240_000 * (base_fee_gwei + 1.0) * 1e-9 * sell.price
    strategy = DexDexStrategy(DexDexConfig(min_net_edge_bps=-1_000.0, max_notional=max_notional))
    evaluation = strategy.evaluate(buy, sell, gas_event, gas_quote, T0)
    chosen = net_profit(evaluation)
    assert math.isfinite(chosen) and chosen >= 0.0
    grid = [max_notional * i / 2_000 for i in range(1, 2_001)]
    best_on_grid = max(cycle(buy, sell, q).profit - gas_quote for q in grid)
    scale = max(1.0, abs(best_on_grid))
    assert chosen >= best_on_grid - 1e-9 * scale - 1e-9 * max_notional
    if evaluation.size > 0.0:
        assert chosen > 0.0 and evaluation.tradeable
        assert evaluation.size * evaluation.buy_price <= max_notional * (1 + 1e-12)
    else:
        assert best_on_grid <= 1e-9 * max_notional
