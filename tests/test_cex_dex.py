"""CEX-DEX: pool maths against Uniswap V2's integer arithmetic, the sizing against brute force, gas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import CexCexConfig, RuleScorerConfig
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.market_state import MarketState
from bot.opportunities import OpportunityTracker
from bot.rejections import RejectionCounter
from bot.scoring.rule import RuleScorer
from strategies import amm
from strategies.cex_dex import UNISWAP_V2_SWAP_GAS, CexDexEvaluation, CexDexStrategy, buy_pool_sell_cex

ETH = "ETH/USDT"
T0 = 1_763_700_000_000
POOL_ADDRESS = "0xB4e16d0168e52d35CaCD2c6185b44281Ec28C9Dc"
POOL_VENUE = f"uniswap_v2:{POOL_ADDRESS}"


def pool(reserve_base: float, reserve_quote: float, fee_bps: float = 30.0, block: int = 21_000_000) -> PoolEvent:
    return PoolEvent(
        chain="ethereum",
        dex="uniswap_v2",
        pool=POOL_ADDRESS,
        symbol=ETH,
        base="ETH",
        quote="USDT",
        reserve_base=reserve_base,
        reserve_quote=reserve_quote,
        fee_bps=fee_bps,
        block=block,
        ts=T0,
    )


def gas(base_fee_gwei: float, priority_fee_gwei: float, chain: str = "ethereum") -> GasEvent:
    return GasEvent(
        chain=chain,
        block=21_000_000,
        ts=T0,
        base_fee_gwei=base_fee_gwei,
        priority_fee_gwei=priority_fee_gwei,
        gas_used_ratio=0.5,
    )


def book(venue: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]], ts: int = T0) -> BookEvent:
    return BookEvent(venue=venue, symbol=ETH, ts=ts, bids=tuple(bids), asks=tuple(asks))


def strategy(fee_bps: float = 10.0, min_net_edge_bps: float = 0.0, max_notional: float = 1e9) -> CexDexStrategy:
    return CexDexStrategy(
        min_net_edge_bps=min_net_edge_bps,
        max_notional=max_notional,
        taker_fee_bps={"alpha": fee_bps, "beta": fee_bps},
        gas_units_per_swap=UNISWAP_V2_SWAP_GAS,
        chain="ethereum",
        gas_price_symbol=ETH,
    )


def only(evaluations: list[CexDexEvaluation], buy: str, sell: str) -> CexDexEvaluation:
    matches = [e for e in evaluations if (e.evaluation.buy_venue, e.evaluation.sell_venue) == (buy, sell)]
    assert len(matches) == 1, evaluations
    return matches[0]


def net_profit(e: CexDexEvaluation) -> float:
    """Net profit after every cost, back from the edge (net edge is in bps of the buy notional)."""
    ev = e.evaluation
    return ev.net_edge_bps / 1e4 * ev.buy_price * ev.size


# ---------------------------------------------------------------- pool maths vs Uniswap V2 integers


def get_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountOut."""
    amount_in_with_fee = amount_in * 997
    return amount_in_with_fee * reserve_out // (reserve_in * 1000 + amount_in_with_fee)


def get_amount_in(amount_out: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountIn."""
    return reserve_in * amount_out * 1000 // ((reserve_out - amount_out) * 997) + 1


decimals = st.sampled_from([6, 8, 18])
# Raw reserves of 1e15 and more, trades of at least 1e-4 of a reserve: the contract's rounding to whole raw
# units is then below 1e-10 of the amounts, so the float formulas must agree to 1e-9.
raw_reserves = st.integers(min_value=10**15, max_value=10**30)


@settings(max_examples=300, deadline=None)
@given(raw_reserves, raw_reserves, st.floats(min_value=1e-4, max_value=10.0), decimals, decimals)
def test_amount_out_matches_get_amount_out(r_in: int, r_out: int, fraction: float, d_in: int, d_out: int) -> None:
    raw_in = int(r_in * fraction)
    expected = get_amount_out(raw_in, r_in, r_out) / 10**d_out
    got = amm.amount_out(r_in / 10**d_in, r_out / 10**d_out, raw_in / 10**d_in, 30.0)
    assert math.isclose(got, expected, rel_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(raw_reserves, raw_reserves, st.floats(min_value=1e-4, max_value=0.9), decimals, decimals)
def test_amount_in_for_matches_get_amount_in(r_in: int, r_out: int, fraction: float, d_in: int, d_out: int) -> None:
    raw_out = int(r_out * fraction)
    expected = get_amount_in(raw_out, r_in, r_out) / 10**d_in
    got = amm.amount_in_for(r_in / 10**d_in, r_out / 10**d_out, raw_out / 10**d_out, 30.0)
    assert math.isclose(got, expected, rel_tol=1e-9)


reserves = st.floats(min_value=1e-3, max_value=1e9)
pool_fees = st.sampled_from([0.0, 1.0, 5.0, 30.0, 100.0])


@settings(max_examples=200, deadline=None)
@given(reserves, reserves, st.floats(min_value=1e-6, max_value=5.0), pool_fees)
def test_marginals_are_the_derivatives_and_swaps_invert(r_in: float, r_out: float, f: float, fee_bps: float) -> None:
    x = r_in * f
    h = x * 1e-5
    slope = (amm.amount_out(r_in, r_out, x + h, fee_bps) - amm.amount_out(r_in, r_out, x - h, fee_bps)) / (2 * h)
    assert math.isclose(amm.marginal_out(r_in, r_out, x, fee_bps), slope, rel_tol=1e-6)
    y = amm.amount_out(r_in, r_out, x, fee_bps)
    assert math.isclose(amm.amount_in_for(r_in, r_out, y, fee_bps), x, rel_tol=1e-9)
    # The next unit out costs the reciprocal of what the next unit in pays, at the same point of the curve.
    assert math.isclose(amm.marginal_in(r_in, r_out, y, fee_bps), 1.0 / amm.marginal_out(r_in, r_out, x, fee_bps))


@settings(max_examples=200, deadline=None)
@given(reserves, st.floats(min_value=1e-3, max_value=1e5), st.floats(min_value=0.5, max_value=2.0), pool_fees)
def test_sizes_at_a_price_solve_the_marginal(base: float, spot: float, ratio: float, fee_bps: float) -> None:
    p = pool(base, base * spot, fee_bps)
    target = spot * ratio
    sell = amm.sell_size_at_price(p, target)
    if sell > base * 1e-9:
        assert math.isclose(amm.marginal_sell_price(p, sell), target, rel_tol=1e-9)
    else:  # the first unit sold already pays less than the target
        assert amm.marginal_sell_price(p, 0.0) <= target * (1 + 1e-9)
    buy = amm.buy_size_at_price(p, target)
    if buy > base * 1e-9:
        assert buy < base
        assert math.isclose(amm.marginal_buy_price(p, buy), target, rel_tol=1e-9)
    else:
        assert amm.marginal_buy_price(p, 0.0) >= target * (1 - 1e-9)


def test_amount_in_for_refuses_the_whole_reserve() -> None:
    with pytest.raises(ValueError, match="reserve"):
        amm.amount_in_for(100.0, 10.0, 10.0, 30.0)


# ---------------------------------------------------------------- sizing vs brute force


def _levels_value(levels: list[tuple[float, float]], sizes: np.ndarray) -> np.ndarray:
    """Quote value of the first `sizes` of the levels (piecewise linear: exact by interpolation)."""
    depth = np.concatenate([[0.0], np.cumsum([s for _, s in levels])])
    value = np.concatenate([[0.0], np.cumsum([p * s for p, s in levels])])
    return np.interp(sizes, depth, value)


def reference_net(
    e: CexDexEvaluation, b: BookEvent, p: PoolEvent, fee: float, max_notional: float, sizes: np.ndarray
) -> np.ndarray:
    """Net profit after gas of each size, NaN where the size is out of bounds (book depth, notional cap).

    Written from the Uniswap V2 formulas directly, not through `strategies.amm`.
    """
    keep = 1.0 - p.fee_bps / 1e4
    rb, rq = p.reserve_base, p.reserve_quote
    gas_cost = e.gas_quote
    if e.evaluation.buy_venue == b.venue:
        depth = sum(s for _, s in b.asks)
        cex_cost = _levels_value(list(b.asks), sizes)
        pool_out = sizes * keep * rq / (rb + sizes * keep)
        net = pool_out - cex_cost * (1 + fee) - gas_cost
        outlay = cex_cost
    else:
        depth = sum(s for _, s in b.bids)
        cex_out = _levels_value(list(b.bids), sizes)
        with np.errstate(divide="ignore", invalid="ignore"):
            pool_in = np.where(sizes < rb, rq * sizes / ((rb - sizes) * keep), np.inf)
        net = cex_out * (1 - fee) - pool_in - gas_cost
        outlay = pool_in
    # A hair of slack on the cap: the optimiser's outlay is a float sum that may land a rounding above it.
    return np.where((sizes <= depth) & (outlay <= max_notional * (1 + 1e-12)), net, np.nan)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[BookEvent, PoolEvent, GasEvent, float, float]:
    """A book whose mid is within ±4% of the pool's spot, so that one direction often pays."""
    base = draw(st.floats(min_value=1.0, max_value=1e5))
    spot = draw(st.floats(min_value=0.01, max_value=1e5))
    p = pool(base, base * spot, draw(pool_fees))
    mid = spot * (1 + draw(st.floats(min_value=-0.04, max_value=0.04)))
    half_spread = draw(st.floats(min_value=1e-5, max_value=2e-3))
    steps = st.lists(st.floats(min_value=1e-5, max_value=5e-3), min_size=1, max_size=6)
    level_sizes = st.floats(min_value=1e-4, max_value=0.05)
    asks, bids = [], []
    offset = half_spread
    for step in draw(steps):
        asks.append((mid * (1 + offset), base * draw(level_sizes)))
        offset += step
    offset = half_spread
    for step in draw(steps):
        bids.append((mid * (1 - offset), base * draw(level_sizes)))
        offset += step
    g = gas(draw(st.floats(min_value=0.0, max_value=300.0)), draw(st.floats(min_value=0.0, max_value=5.0)))
    cex_fee_bps = draw(st.floats(min_value=0.0, max_value=30.0))
    max_notional = base * spot * draw(st.floats(min_value=1e-4, max_value=0.2))
    return book("alpha", bids, asks), p, g, cex_fee_bps, max_notional


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.floats(min_value=-50.0, max_value=50.0))
def test_chosen_size_beats_every_size_on_a_fine_grid(
    scenario: tuple[BookEvent, PoolEvent, GasEvent, float, float], min_net_edge_bps: float
) -> None:
    b, p, g, fee_bps, max_notional = scenario
    strat = strategy(fee_bps=fee_bps, min_net_edge_bps=min_net_edge_bps, max_notional=max_notional)
    spot = p.price
    fee = fee_bps / 1e4
    for e in strat.evaluate(b, p, g, spot, T0):
        ev = e.evaluation
        levels = b.asks if ev.buy_venue == b.venue else b.bids
        depth = sum(s for _, s in levels)
        kinks = np.cumsum([s for _, s in levels])
        grid = np.unique(np.concatenate([np.linspace(0.0, depth, 4001), kinks, [ev.size]]))
        net = reference_net(e, b, p, fee, max_notional, grid)
        best = float(np.nanmax(net))
        scale = max(1.0, ev.buy_price * ev.size, max_notional * 1e-3)
        tol = 1e-9 * scale

        assert e.gas_quote == pytest.approx(UNISWAP_V2_SWAP_GAS * (g.base_fee_gwei + g.priority_fee_gwei) * 1e-9 * spot)
        assert ev.gas == e.gas_quote
        if ev.size == 0.0:
            # No size pays even before gas.
            assert best <= -e.gas_quote + tol
            assert not ev.tradeable
            continue
        chosen = float(reference_net(e, b, p, fee, max_notional, np.array([ev.size]))[0])
        assert not math.isnan(chosen), "the chosen size is out of bounds (depth or max_notional)"
        assert chosen >= best - tol
        # The evaluation's own figures say the same: net = (sell - buy) * size - fees - gas.
        assert net_profit(e) == pytest.approx(chosen, rel=1e-9, abs=tol)
        assert (ev.sell_price - ev.buy_price) * ev.size - ev.fees - ev.gas == pytest.approx(chosen, rel=1e-9, abs=tol)
        assert ev.fees >= 0.0
        if ev.tradeable:
            assert chosen > 0.0
            assert ev.net_edge_bps >= min_net_edge_bps
        else:
            assert chosen <= tol or ev.net_edge_bps < min_net_edge_bps


def test_cap_binds_on_the_pool_swap_input() -> None:
    p = pool(100.0, 290_000.0)  # 2900 on the pool, 3000 on the book: buy from the pool
    b = book("alpha", [(3000.0, 50.0)], [(3001.0, 50.0)])
    free = buy_pool_sell_cex(b.bids, p, 0.001, math.inf)
    capped = buy_pool_sell_cex(b.bids, p, 0.001, 1_000.0)
    assert free.size > capped.size > 0
    assert amm.buy_base_cost(p, capped.size) == pytest.approx(1_000.0, rel=1e-12)


# ---------------------------------------------------------------- on market state


def state_with(*events: BookEvent | PoolEvent | GasEvent) -> MarketState:
    state = MarketState(RejectionCounter())
    for event in events:
        if isinstance(event, BookEvent):
            assert state.apply(event)
        elif isinstance(event, PoolEvent):
            assert state.apply_pool(event)
        else:
            assert state.apply_gas(event)
    return state


def test_hand_computed_buy_on_the_book_sell_into_the_pool() -> None:
    # Pool 1000 ETH / 3,000,000 USDT, 30 bps (g = 0.997): marginal sell price g·Rb·Rq / (Rb + g·b)².
    # alpha asks 2940 x2, 2950 x100, taker fee 10 bps; gas 110,000 x (20 + 1) gwei at mid (2939 + 2940) / 2.
    #   level 1: 2940 x 1.001 = 2942.94; the pool pays that down to b = (√(0.997e9·3/2942.94) - 1000) / 0.997
    #            = (1008.1322 - 1000) / 0.997 = 8.1567 > 2: take the whole level.
    #   level 2: 2950 x 1.001 = 2952.95; b = (√(2.991e9/2952.95) - 1000) / 0.997 = 6.422088 / 0.997
    #            = 6.441412 < 102: stop inside the level.
    #   cost 2 x 2940 + 4.441412 x 2950 = 18,982.1668; taker fee 18.9822
    #   pool pays 6.441412 x 0.997 x 3e6 / (1000 + 6.441412 x 0.997) = 19,143.3246;
    #     without its fee 6.441412 x 3e6 / 1006.441412 = 19,200.5587, so the pool fee is 57.2341
    #   gas 110,000 x 21e-9 ETH x 2939.5 = 6.7902
    #   net 19,143.3246 - 18,982.1668 - 18.9822 - 6.7902 = 135.3854 = 71.32 bps of the cost
    #   gross (19,200.5587 - 18,982.1668) / 18,982.1668 = 115.05 bps
    b = book("alpha", [(2939.0, 100.0)], [(2940.0, 2.0), (2950.0, 100.0)], ts=T0 + 7)
    p = pool(1000.0, 3_000_000.0)
    state = state_with(gas(20.0, 1.0), p, b)
    evaluations = strategy(fee_bps=10.0).on_book(state, b)
    e = only(evaluations, "alpha", POOL_VENUE)
    ev = e.evaluation
    assert ev.kind == "cex_dex"
    assert ev.size == pytest.approx(6.441412, rel=1e-6)
    assert ev.buy_price == pytest.approx(18_982.1668 / 6.441412, rel=1e-6)
    assert ev.sell_price == pytest.approx(19_200.5587 / 6.441412, rel=1e-6)
    assert ev.fees == pytest.approx(18.9822 + 57.2341, rel=1e-6)
    assert e.gas_quote == pytest.approx(6.790245, rel=1e-9)
    assert net_profit(e) == pytest.approx(135.3854, rel=1e-6)
    assert ev.net_edge_bps == pytest.approx(71.32, abs=0.01)
    assert ev.gross_edge_bps == pytest.approx(115.05, abs=0.01)
    assert ev.tradeable
    assert (ev.buy_book_ts, ev.sell_book_ts, ev.ts) == (T0 + 7, T0, T0 + 7)
    assert (e.base_fee_gwei, e.priority_fee_gwei, e.pool_block) == (20.0, 1.0, 21_000_000)
    # The other way round (buy at >= 3000 / 0.997 on the pool, sell at 2939) does not pay: size 0 at the touch.
    other = only(evaluations, POOL_VENUE, "alpha").evaluation
    assert (other.size, other.tradeable, other.buy_price, other.sell_price) == (0.0, False, 3000.0, 2939.0)
    assert other.net_edge_bps < 0


def test_direction_pool_cheaper_than_the_book_buys_on_the_pool() -> None:
    b = book("alpha", [(3000.0, 10.0)], [(3001.0, 10.0)])
    state = state_with(gas(10.0, 1.0), b)
    p = pool(1000.0, 2_950_000.0)  # 2950 on the pool
    assert state.apply_pool(p)
    evaluations = strategy().on_pool(state, p)
    assert len(evaluations) == 2
    good = only(evaluations, POOL_VENUE, "alpha").evaluation
    bad = only(evaluations, "alpha", POOL_VENUE).evaluation
    assert good.tradeable and good.size > 0
    assert good.buy_price < good.sell_price
    assert good.ts == T0 and good.buy_book_ts == p.ts
    assert not bad.tradeable and bad.size == 0.0
    # And the mirror image: a pool dearer than the book sells into the pool.
    dear = pool(1000.0, 3_050_000.0, block=21_000_001)
    assert state.apply_pool(dear)
    mirrored = strategy().on_pool(state, dear)
    assert only(mirrored, "alpha", POOL_VENUE).evaluation.tradeable
    assert not only(mirrored, POOL_VENUE, "alpha").evaluation.tradeable


def test_gas_decides_a_gap_that_pays_only_when_gas_is_left_out() -> None:
    # One bot predicted +1.11% where the trade lost 28% because gas was left out. A thin pool (3.57 ETH at
    # 2923) under a book bidding 3000: the best size is ~0.039 ETH, ~115 USDT, +1.11% before gas. Gas of a
    # swap at 100 + 2 gwei is 110,000 x 102e-9 x 3000.5 = 33.66 USDT, 29% of the trade: a 28% loss.
    # At 1 + 0.1 gwei the same gap pays.
    b = book("alpha", [(3000.0, 100.0)], [(3001.0, 100.0)])
    p = pool(3.57, 3.57 * 2923.0)
    cheap, dear = gas(1.0, 0.1), gas(100.0, 2.0)
    strat = strategy(fee_bps=10.0)
    low = only(strat.evaluate(b, p, cheap, 3000.5, T0), POOL_VENUE, "alpha")
    high = only(strat.evaluate(b, p, dear, 3000.5, T0), POOL_VENUE, "alpha")
    assert low.evaluation.size == high.evaluation.size  # gas is fixed: it does not move the best size
    gas_blind_bps = (net_profit(high) + high.gas_quote) / (high.evaluation.buy_price * high.evaluation.size) * 1e4
    assert gas_blind_bps == pytest.approx(111.0, abs=0.5)
    assert high.evaluation.net_edge_bps == pytest.approx(-2800.0, abs=20.0)
    assert not high.tradeable
    assert low.tradeable
    assert 0 < low.evaluation.net_edge_bps < gas_blind_bps
    # Through the market state, a new gas event alone flips the answer.
    state = state_with(cheap, p, b)
    assert only(strat.on_book(state, b), POOL_VENUE, "alpha").tradeable
    assert state.apply_gas(dear)
    assert not only(strat.on_gas(state, dear), POOL_VENUE, "alpha").tradeable


def test_nothing_is_evaluated_without_gas_for_the_chain() -> None:
    b = book("alpha", [(3000.0, 10.0)], [(3001.0, 10.0)])
    p = pool(1000.0, 2_900_000.0)
    strat = strategy()
    state = state_with(p, b)
    assert strat.on_book(state, b) == []
    assert strat.on_pool(state, p) == []
    other_chain = gas(10.0, 1.0, chain="arbitrum")
    assert state.apply_gas(other_chain)
    assert strat.on_book(state, b) == []
    assert strat.on_gas(state, other_chain) == []
    here = gas(10.0, 1.0)
    assert state.apply_gas(here)
    assert len(strat.on_book(state, b)) == 2


def test_nothing_is_evaluated_without_a_price_for_the_gas_token() -> None:
    b = book("alpha", [(3000.0, 10.0)], [(3001.0, 10.0)])
    p = pool(1000.0, 2_900_000.0)
    state = state_with(gas(10.0, 1.0), p, b)
    strat = CexDexStrategy(0.0, 1e9, {"alpha": 10.0}, chain="ethereum", gas_price_symbol="MATIC/USDT")
    assert strat.on_book(state, b) == []


def test_gas_token_priced_from_the_book_mid_else_the_pool() -> None:
    strat = strategy()
    p = pool(1000.0, 2_900_000.0)
    assert strat.gas_token_price(state_with(p)) == pytest.approx(2900.0)
    assert strat.gas_token_price(state_with(p, book("alpha", [(3000.0, 1.0)], [(3002.0, 1.0)]))) == 3001.0
    assert strat.gas_token_price(state_with()) is None


def test_updates_re_evaluate_what_they_touch() -> None:
    p = pool(1000.0, 2_900_000.0)
    alpha = book("alpha", [(3000.0, 10.0)], [(3001.0, 10.0)])
    beta = book("beta", [(2990.0, 10.0)], [(2991.0, 10.0)])
    state = state_with(gas(10.0, 1.0), p, alpha, beta)
    strat = strategy()
    # A book: its own venue against each pool of the symbol, both ways.
    assert {e.key[2:] for e in strat.on_book(state, beta)} == {("beta", POOL_VENUE), (POOL_VENUE, "beta")}
    # A pool: against every live book of its symbol.
    pairs = {e.key[2:] for e in strat.on_pool(state, p)}
    assert pairs == {("alpha", POOL_VENUE), (POOL_VENUE, "alpha"), ("beta", POOL_VENUE), (POOL_VENUE, "beta")}
    # Gas: everything on the chain; another chain's pool is not ours.
    elsewhere = p.model_copy(update={"chain": "arbitrum", "pool": "0xother"})
    assert state.apply_pool(elsewhere)
    assert strat.on_pool(state, elsewhere) == []
    new_gas = gas(12.0, 1.0)
    assert state.apply_gas(new_gas)
    on_gas = strat.on_gas(state, new_gas)
    assert {e.key[2:] for e in on_gas} == pairs
    assert all(e.evaluation.ts == new_gas.ts and e.base_fee_gwei == 12.0 for e in on_gas)


def test_gas_re_evaluates_the_configured_symbols_before_any_other_update() -> None:
    p = pool(1000.0, 2_900_000.0)
    b = book("alpha", [(3000.0, 10.0)], [(3001.0, 10.0)])
    g = gas(10.0, 1.0)
    state = state_with(g, p, b)
    assert strategy().on_gas(state, g) == []  # it has seen no ETH/USDT update and was given no symbols
    configured = CexDexStrategy(0.0, 1e9, {"alpha": 10.0}, chain="ethereum", gas_price_symbol=ETH, symbols=[ETH])
    assert len(configured.on_gas(state, g)) == 2


def test_evaluation_becomes_a_signal_with_its_gas() -> None:
    b = book("alpha", [(3000.0, 10.0)], [(3001.0, 10.0)])
    p = pool(1000.0, 2_950_000.0)
    state = state_with(gas(10.0, 1.5), p, b)
    e = only(strategy().on_book(state, b), POOL_VENUE, "alpha")
    assert e.tradeable
    score = RuleScorer(RuleScorerConfig()).score(e.evaluation)
    signal = OpportunityTracker(CexCexConfig()).observe(e.evaluation, score)
    assert signal is not None
    assert signal.kind == "cex_dex"
    assert signal.costs.gas == pytest.approx(e.gas_quote)
    assert (signal.costs.base_fee_gwei, signal.costs.priority_fee_gwei) == (10.0, 1.5)
