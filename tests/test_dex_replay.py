"""The real Uniswap V3 pools of 2024-01-05 through the whole pipeline: dex_dex signals net of both pool fees and gas."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_config
from bot.importers.uniswap_v3 import GasAssumption, import_uniswap_v3
from bot.messages import Signal
from bot.recording import read_events
from bot.replay import replay_events

FIXTURES = Path(__file__).parent / "fixtures" / "uniswap_v3"
CONFIG = Path(__file__).resolve().parent.parent / "config" / "uniswap-v3.yaml"
POOLS = {"0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640", "0x8ad599c3a0ff1de082011efddc58f1908eb6e6d8"}


async def _signals(tmp_path: Path, base_fee_gwei: float) -> list[Signal]:
    out = tmp_path / f"uniswap-{base_fee_gwei}.jsonl.gz"
    import_uniswap_v3(FIXTURES, out, GasAssumption(base_fee_gwei=base_fee_gwei, priority_fee_gwei=1.0))
    signals: list[Signal] = []
    summary = await replay_events(load_config(CONFIG), read_events(out), signals.append)
    assert summary.rejected == 0 and summary.signals_from_stale_books == 0
    return signals


async def test_dex_dex_finds_the_days_gaps_net_of_fees_and_gas(tmp_path: Path) -> None:
    signals = await _signals(tmp_path, base_fee_gwei=20.0)
    opened = [s for s in signals if s.status == "open"]
    assert opened
    for signal in opened:
        assert signal.kind == "dex_dex" and signal.symbol == "ETH/USDC"
        assert {signal.buy_venue.split(":")[1], signal.sell_venue.split(":")[1]} == POOLS
        assert signal.net_edge_bps >= 1.0
        assert signal.costs.base_fee_gwei == 20.0 and signal.costs.priority_fee_gwei == 1.0
        # two swaps × 120,000 gas × 21 gwei, priced in USDC at roughly the day's ~2,250 USDC per ETH
        assert signal.costs.gas == pytest.approx(2 * 120_000 * 21e-9 * signal.buy_price, rel=0.02)
        gross = (signal.sell_price - signal.buy_price) * signal.size
        assert gross > signal.costs.fees + signal.costs.gas


async def test_a_high_base_fee_removes_the_smaller_gaps(tmp_path: Path) -> None:
    cheap = {s.opportunity_id for s in await _signals(tmp_path, 20.0) if s.status == "open"}
    dear = {s.opportunity_id for s in await _signals(tmp_path, 2_000.0) if s.status == "open"}
    assert len(dear) < len(cheap)
