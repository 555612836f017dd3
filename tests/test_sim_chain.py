"""The chain simulator (EIP-1559 gas market calibrated to mainnet, pools with a gas-aware arbitrageur) and
`simulate`, which writes a recording from the market and chain simulators without network or servers."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bot.config import DEMO_CONFIG_PATH, ChainConfig, LocalPoolEntry, RootConfig, load_config, parse_config
from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent
from bot.recording import read_events, time_key
from bot.rejections import RejectionCounter
from bot.sim.chain import (
    WEI_PER_GWEI,
    ChainSimParams,
    ChainSimulator,
    arbitrage_trade,
    next_base_fee_wei,
)
from bot.simulate import SIMULATION_EPOCH_MS, SimulateError, simulate
from strategies.amm import amount_out, marginal_out

BLOCK_MS = 12_000
GAS_LIMIT = 30_000_000


def _gas_run(seed: int, blocks: int, params: ChainSimParams | None = None) -> list[GasEvent]:
    sim = ChainSimulator(ChainConfig(), seed, params)
    return [sim.step(SIMULATION_EPOCH_MS + i * BLOCK_MS, {})[0] for i in range(blocks)]


def _wei(event: GasEvent) -> int:
    return round(event.base_fee_gwei * WEI_PER_GWEI)


def _gas_used(event: GasEvent) -> int:
    return round(event.gas_used_ratio * GAS_LIMIT)


# ---------------------------------------------------------------- EIP-1559


def test_next_base_fee_follows_the_spec_integer_rule() -> None:
    base = 20 * WEI_PER_GWEI
    assert next_base_fee_wei(base, GAS_LIMIT, GAS_LIMIT) == base + base // 8
    assert next_base_fee_wei(base, 0, GAS_LIMIT) == base - base // 8
    assert next_base_fee_wei(base, GAS_LIMIT // 2, GAS_LIMIT) == base
    assert next_base_fee_wei(base, 22_500_000, GAS_LIMIT) == base + base // 16
    # An increase is at least one wei, a decrease may round to nothing.
    assert next_base_fee_wei(7, GAS_LIMIT // 2 + 1, GAS_LIMIT) == 8
    assert next_base_fee_wei(7, GAS_LIMIT // 2 - 1, GAS_LIMIT) == 7


def test_base_fee_follows_eip1559_between_consecutive_blocks() -> None:
    events = _gas_run(seed=5, blocks=3_000)
    assert [e.block for e in events] == list(range(events[0].block, events[0].block + len(events)))
    assert {e.ts - p.ts for p, e in itertools.pairwise(events)} == {BLOCK_MS}
    for parent, child in itertools.pairwise(events):
        # Exact in integer wei, as a node computes it...
        assert _wei(child) == next_base_fee_wei(_wei(parent), _gas_used(parent), GAS_LIMIT)
        # ...and the textbook formula in floats, to the rounding of one wei.
        expected = parent.base_fee_gwei * (1.0 + (parent.gas_used_ratio - 0.5) / 0.5 / 8.0)
        assert child.base_fee_gwei == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert all(0.0 <= e.gas_used_ratio <= 1.0 and e.priority_fee_gwei > 0.0 for e in events)


@pytest.mark.parametrize("seed", [7, 2])
def test_base_fee_statistics_resemble_mainnet(seed: int) -> None:
    """CALIBRATION.md, 435,886 mainnet blocks: median 19.2 gwei, p95/median 2.6, 2.8% of blocks up ≥ 12%,
    gas used mean 0.50 (p10 0.33, p90 0.74), hourly log change std 0.28."""
    events = _gas_run(seed, blocks=30_000)
    base = np.array([e.base_fee_gwei for e in events])
    ratio = np.array([e.gas_used_ratio for e in events])
    change = base[1:] / base[:-1] - 1.0
    hourly = np.diff(np.log(base)[::300])
    median = float(np.median(base))
    assert 15.0 <= median <= 25.0
    assert 2.0 <= np.percentile(base, 95) / median <= 3.4
    assert 0.02 <= np.mean(change >= 0.12) <= 0.04
    assert np.mean(change <= -0.12) <= 0.005
    assert -0.07 <= np.percentile(change, 5) <= -0.035
    assert -0.015 <= np.median(change) <= -0.003
    assert 0.07 <= np.percentile(change, 95) <= 0.11
    assert 0.47 <= ratio.mean() <= 0.53
    assert 0.28 <= np.percentile(ratio, 10) <= 0.38
    assert 0.42 <= np.median(ratio) <= 0.50
    assert 0.68 <= np.percentile(ratio, 90) <= 0.80
    assert 0.2 <= np.std(hourly) <= 0.35
    tips = np.array([e.priority_fee_gwei for e in events])
    assert 1.0 <= np.median(tips) <= 2.0


def test_same_seed_same_gas_other_seed_other_gas() -> None:
    assert _gas_run(3, 200) == _gas_run(3, 200)
    assert _gas_run(3, 200) != _gas_run(4, 200)


# ---------------------------------------------------------------- pools and the arbitrageur


def test_arbitrage_trade_stops_where_the_marginal_price_meets_the_fair_price() -> None:
    reserve_base, reserve_quote, fee = 200.0, 680_000.0, 30.0  # pool at 3400
    for fair in (3_500.0, 3_300.0):
        buys_base, size, profit = arbitrage_trade(reserve_base, reserve_quote, fee, fair)
        assert buys_base == (fair > 3_400.0)
        reserve_in, reserve_out, value_in, value_out = (
            (reserve_quote, reserve_base, 1.0, fair) if buys_base else (reserve_base, reserve_quote, fair, 1.0)
        )
        assert marginal_out(reserve_in, reserve_out, size, fee) * value_out == pytest.approx(value_in, rel=1e-9)

        pnl = [
            amount_out(reserve_in, reserve_out, amount, fee) * value_out - amount * value_in
            for amount in (size * 0.99, size, size * 1.01)
        ]
        assert profit == pytest.approx(pnl[1], rel=1e-9)
        assert profit > max(pnl[0], pnl[2]) > 0.0
    # Inside the fee band nothing pays.
    assert arbitrage_trade(reserve_base, reserve_quote, fee, 3_405.0)[1:] == (0.0, 0.0)
    assert arbitrage_trade(reserve_base, reserve_quote, fee, 3_395.0)[1:] == (0.0, 0.0)


def _pool_chain() -> ChainConfig:
    return ChainConfig(
        local_pools=(
            LocalPoolEntry(symbol="ETH/USDT", base_liquidity=200.0, fee_bps=30.0),
            LocalPoolEntry(symbol="BTC/USDT", base_liquidity=5.0, fee_bps=5.0),
        )
    )


def _fair_path(blocks: int, seed: int = 11) -> list[dict[str, float]]:
    # ~17 bps per 12 s block, as the demo's ETH; BTC a little calmer.
    rng = np.random.default_rng(seed)
    eth = 3_400.0 * np.exp(np.cumsum(rng.normal(0.0, 17e-4, blocks)))
    btc = 97_000.0 * np.exp(np.cumsum(rng.normal(0.0, 14e-4, blocks)))
    return [{"ETH/USDT": float(e), "BTC/USDT": float(b)} for e, b in zip(eth, btc, strict=True)]


def _pool_run(
    params: ChainSimParams, blocks: int = 1_500
) -> tuple[ChainSimulator, list[tuple[GasEvent, list[PoolEvent]]]]:
    sim = ChainSimulator(_pool_chain(), 9, params)
    return sim, [sim.step(SIMULATION_EPOCH_MS + i * BLOCK_MS, fair) for i, fair in enumerate(_fair_path(blocks))]


def _log_gaps(run: list[tuple[GasEvent, list[PoolEvent]]], symbol: str) -> np.ndarray:
    fairs = _fair_path(len(run))
    return np.array(
        [
            np.log(pool.price / fair[symbol])
            for (_, pools), fair in zip(run, fairs, strict=True)
            for pool in pools
            if pool.symbol == symbol
        ]
    )


def test_no_arbitrage_beyond_gas_is_left_at_the_end_of_a_block() -> None:
    sim, run = _pool_run(ChainSimParams())
    for (gas, pools), fair in zip(run, _fair_path(len(run)), strict=True):
        for pool in pools:
            _, _, profit = arbitrage_trade(pool.reserve_base, pool.reserve_quote, pool.fee_bps, fair[pool.symbol])
            cost = sim.gas_cost(pool.quote, gas.base_fee_gwei, gas.priority_fee_gwei, fair)
            assert profit <= cost * (1.0 + 1e-9)
    for symbol, fee in (("ETH/USDT", 30.0), ("BTC/USDT", 5.0)):
        gaps = np.abs(_log_gaps(run, symbol))
        # Gaps are bounded by the fee plus what gas is worth, yet often exceed the fee alone: pools lag the CEX.
        assert gaps.max() < 0.03
        assert np.mean(gaps > fee * 1e-4) > 0.2


def test_dear_gas_lets_pools_drift_further_from_the_fair_price() -> None:
    cheap = np.abs(_log_gaps(_pool_run(ChainSimParams(demand_base_fee_gwei=0.5))[1], "ETH/USDT"))
    dear = np.abs(_log_gaps(_pool_run(ChainSimParams(demand_base_fee_gwei=5_000.0))[1], "ETH/USDT"))
    assert np.mean(dear) > 3.0 * np.mean(cheap)
    assert np.percentile(dear, 90) > 3.0 * np.percentile(cheap, 90)
    # Without the arbitrageur the pool wanders off with the fair price for good.
    unarbitraged = np.abs(_log_gaps(_pool_run(ChainSimParams(arbitrage=False))[1], "ETH/USDT"))
    assert np.mean(unarbitraged) > np.mean(dear)


def test_pool_events_are_valid_and_seeded_at_the_fair_price() -> None:
    _, run = _pool_run(ChainSimParams(), blocks=3)
    first = run[0][1]
    assert [p.symbol for p in first] == ["ETH/USDT", "BTC/USDT"]
    assert first[0].base == "ETH" and first[0].quote == "USDT" and first[0].dex == "uniswap_v2"
    assert first[0].pool.startswith("0x") and len(first[0].pool) == 42
    assert first[0].price == pytest.approx(_fair_path(1)[0]["ETH/USDT"], rel=0.03)
    assert all(p.block == gas.block and p.ts == gas.ts for gas, pools in run for p in pools)


def test_step_rejects_time_going_backwards_and_unpriced_pools() -> None:
    sim = ChainSimulator(_pool_chain(), 1)
    sim.step(SIMULATION_EPOCH_MS, _fair_path(1)[0])
    with pytest.raises(ValueError, match="not after"):
        sim.step(SIMULATION_EPOCH_MS, _fair_path(1)[0])
    with pytest.raises(ValueError, match="no fair price"):
        ChainSimulator(_pool_chain(), 1).step(SIMULATION_EPOCH_MS, {"ETH/USDT": 3_400.0})


# ---------------------------------------------------------------- simulate


def _read(path: Path) -> tuple[list[MarketEvent], RejectionCounter]:
    rejections = RejectionCounter()
    return list(read_events(path, rejections)), rejections


def test_simulate_writes_a_valid_time_ordered_recording_with_chain_events(tmp_path: Path) -> None:
    config = load_config(DEMO_CONFIG_PATH)
    out = tmp_path / "sim.jsonl"
    summary = simulate(config, 20.0, out, chain_block_time_s=2.0)
    events, rejections = _read(out)
    assert rejections.total == 0 and summary.rejected == 0
    counts = Counter(e.type for e in events)
    assert counts == {"book": summary.books, "trade": summary.trades, "gas": summary.gas, "pool": summary.pools}
    assert summary.ticks == 400 and summary.books == 400 * 6 and summary.trades > 0
    assert summary.blocks == summary.gas == summary.pools == 10
    keys = [time_key(e) for e in events]
    assert keys == sorted(keys) and keys[0] > SIMULATION_EPOCH_MS and keys[-1] <= summary.end_ms
    books = [e for e in events if isinstance(e, BookEvent)]
    assert all(len(b.bids) <= config.book_depth and len(b.asks) <= config.book_depth for b in books)
    assert {(b.venue, b.symbol) for b in books} == {(v, s) for v in ("alpha", "beta", "gamma") for s in config.symbols}
    gas = [e for e in events if isinstance(e, GasEvent)]
    assert [g.ts for g in gas] == [SIMULATION_EPOCH_MS + 2_000 * (i + 1) for i in range(10)]
    for parent, child in itertools.pairwise(gas):
        assert _wei(child) == next_base_fee_wei(_wei(parent), _gas_used(parent), GAS_LIMIT)
    pools = [e for e in events if isinstance(e, PoolEvent)]
    assert {(p.chain, p.symbol) for p in pools} == {("ethereum", "ETH/USDT")}


def test_simulate_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    config = load_config(DEMO_CONFIG_PATH)
    first, second, gzipped = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl.gz"
    for path in (first, second, gzipped):
        simulate(config, 15.0, path, chain_block_time_s=3.0)
    assert first.read_bytes() == second.read_bytes()
    # gzip stamps its header with the time of writing; what it holds is the same.
    assert gzip.decompress(gzipped.read_bytes()) == first.read_bytes()
    # The default start is the fixed epoch, whatever the wall clock says.
    summary = simulate(config, 15.0, second, start_ms=SIMULATION_EPOCH_MS, chain_block_time_s=3.0)
    assert first.read_bytes() == second.read_bytes()
    assert summary.events == len(first.read_bytes().splitlines())
    assert config.simulator is not None
    other_seed = config.model_copy(update={"simulator": config.simulator.model_copy(update={"seed": 8})})
    simulate(other_seed, 15.0, second, chain_block_time_s=3.0)
    assert first.read_bytes() != second.read_bytes()


def test_simulate_without_a_chain_writes_only_books_and_trades(tmp_path: Path) -> None:
    config = load_config(DEMO_CONFIG_PATH).model_copy(update={"chain": None})
    summary = simulate(config, 5.0, tmp_path / "cex.jsonl")
    assert summary.gas == summary.pools == summary.blocks == 0 and summary.books == 100 * 6


def _demo_dict() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
    return data


def test_simulate_refuses_configs_it_cannot_simulate(tmp_path: Path) -> None:
    data = _demo_dict()
    data["chain"]["local_pools"] = [{"symbol": "SOL/USDT", "base_liquidity": 1000}]
    with pytest.raises(SimulateError, match="SOL/USDT"):
        simulate(parse_config(data), 5.0, tmp_path / "x.jsonl")
    data = _demo_dict()
    del data["simulator"]
    for venue in data["venues"].values():
        venue["simulated"] = False
    with pytest.raises(SimulateError, match="simulator section"):
        simulate(parse_config(data), 5.0, tmp_path / "x.jsonl")
    config: RootConfig = load_config(DEMO_CONFIG_PATH)
    with pytest.raises(SimulateError, match="duration"):
        simulate(config, 0.0, tmp_path / "x.jsonl")
    with pytest.raises(SimulateError, match="block time"):
        simulate(config, 5.0, tmp_path / "x.jsonl", chain_block_time_s=0.0)


def test_chain_sim_params_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="block_time_s"):
        ChainSimParams(block_time_s=0.0)
    with pytest.raises(ValueError, match="burst_fill"):
        ChainSimParams(burst_fill=(1.0, 0.9))
    assert dataclasses.replace(ChainSimParams(), block_time_s=1.0).block_time_s == 1.0
