"""Replay: deterministic signal streams from a recording, and results the data explains (real Binance excerpt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import RootConfig, parse_config
from bot.importers.binance_raw import import_binance_raw
from bot.messages import Signal
from bot.replay import replay_files

FIXTURES = Path(__file__).parent / "fixtures" / "binance_ws"
BASIS_CONFIG = Path(__file__).resolve().parent.parent / "config" / "binance-basis.yaml"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "binance.jsonl.gz"
    import_binance_raw(sorted(FIXTURES.glob("*.gz")), out)
    return out


def _config(fee_bps: dict[str, float] | None = None) -> RootConfig:
    data: dict[str, Any] = yaml.safe_load(BASIS_CONFIG.read_text())
    for venue, fee in (fee_bps or {}).items():
        data["venues"][venue]["taker_fee_bps"] = fee
    return parse_config(data, str(BASIS_CONFIG))


async def _replay(config: RootConfig, recording: Path) -> list[Signal]:
    signals: list[Signal] = []
    summary = await replay_files(config, [recording], signals.append)
    assert summary.rejected == 0
    assert summary.signals_from_stale_books == 0
    return signals


def _comparable(signals: list[Signal]) -> list[dict[str, Any]]:
    """Signals without their random ids; opportunity ids replaced by their order of first appearance."""
    order: dict[str, int] = {}
    rows = []
    for signal in signals:
        row = signal.model_dump(exclude={"id", "sig"})
        row["opportunity_id"] = order.setdefault(signal.opportunity_id, len(order))
        rows.append(row)
    return rows


async def test_replaying_twice_gives_identical_signals(recording: Path) -> None:
    config = _config({"binance": 0.0, "binanceusdm": 0.0})
    first, second = await _replay(config, recording), await _replay(config, recording)
    assert len(first) > 10
    assert _comparable(first) == _comparable(second)


async def test_spot_perpetual_basis_is_the_only_gap_and_fees_close_it(recording: Path) -> None:
    """The perpetual trades a few bps under spot on 2024-08-08: with zero fees cex_cex buys the perpetual and sells
    spot for about the basis; with the venues' real taker fees (10 + 5 bps) nothing is worth signalling."""
    free = await _replay(_config({"binance": 0.0, "binanceusdm": 0.0}), recording)
    opened = [s for s in free if s.status == "open"]
    assert opened
    assert all((s.buy_venue, s.sell_venue) == ("binanceusdm", "binance") for s in opened)
    edges = [s.net_edge_bps for s in free if s.status != "closed"]
    assert 1.0 < sorted(edges)[len(edges) // 2] < 6.0
    assert await _replay(_config(), recording) == []
