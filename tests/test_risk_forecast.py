"""The spread forecast in the execution window: lifetimes by hand, the model file lookup, the engine's use of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import make_signal

from bot.config import RootConfig
from bot.events import BookEvent
from bot.market_state import MarketState
from bot.messages import Signal
from bot.model.file import save_model
from bot.model.forecast import SpreadForecaster
from bot.model.heads import Heads
from bot.model.lstm import LSTM
from bot.rejections import RejectionCounter
from bot.risk.engine import RiskEngine
from bot.risk.forecast_window import ModelSpreadForecast, remaining_lifetime_ms, spread_forecast
from bot.risk.settings import RiskConfig
from bot.risk.window import SpreadForecast

NOW = 1_763_700_000_000

# Mean path from 80 bps: -10 + 90 × 0.5^h = 35, 12.5, 1.25, -4.375 → gone at step 4 (the interval does not matter).
FORECASTER = SpreadForecaster(-10.0, 0.5, 0.9, np.full(8, -5.0), np.full(8, 5.0))
# Never reaches 0 within its 4 steps: mean stays at 50.
STEADY = SpreadForecaster(50.0, 0.9, 0.9, np.full(4, -5.0), np.full(4, 5.0))


class ManualClock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def now_ms(self) -> int:
        return NOW + int(self.seconds * 1_000)

    def monotonic(self) -> float:
        return self.seconds

    async def sleep(self, seconds: float) -> None:
        self.seconds += seconds


def _save(path: Path, forecaster: SpreadForecaster | None) -> None:
    rng = np.random.default_rng(3)
    lstm, heads = LSTM.init(3, 4, 1, rng, np.float64), Heads.init(4, rng, np.float64)
    meta: dict[str, Any] = {
        "features": ["net_edge_bps", "spread_bps", "imbalance"],
        "window": 8,
        "normalisation": {},
        "architecture": {"hidden": 4, "layers": 1},
        "label": {},
        "data_fingerprint": "abc123",
        "metrics": {},
        "created": "2026-11-21T00:00:00Z",
    }
    save_model(path, lstm, heads, meta, forecaster.to_arrays() if forecaster is not None else None)


def _signal(**overrides: object) -> Signal:
    fields: dict[str, object] = {
        "ts": NOW, "buy_price": 100.0, "sell_price": 101.0, "size": 1.0, "score": 0.9,
        "expected_lifetime_ms": 60_000.0, "net_edge_bps": 80.0,
    }  # fmt: skip
    fields.update(overrides)
    return make_signal(**fields)


def test_lifetime_is_the_first_step_whose_mean_path_reaches_zero() -> None:
    assert remaining_lifetime_ms(FORECASTER, 80.0, 100.0) == pytest.approx(400.0)
    assert remaining_lifetime_ms(FORECASTER, 20.0, 100.0) == pytest.approx(200.0)  # 5, then -2.5 at step 2
    assert remaining_lifetime_ms(FORECASTER, -1.0, 100.0) == 0.0
    assert remaining_lifetime_ms(STEADY, 60.0, 50.0) == pytest.approx(200.0)  # the whole horizon, no further


def test_the_symbol_file_comes_first_then_the_kind_file(tmp_path: Path) -> None:
    _save(tmp_path / "cex_cex.npz", STEADY)
    _save(tmp_path / "cex_cex__BTC-USDT.npz", FORECASTER)
    forecast = ModelSpreadForecast(tmp_path, ManualClock())
    assert forecast(_signal(), 100.0) == pytest.approx(400.0)
    assert forecast(_signal(symbol="ETH/USDT"), 100.0) == pytest.approx(400.0)  # the kind's file
    assert forecast(_signal(kind="cex_dex", buy_venue="uniswap_v2:0xabc"), 100.0) is None  # no file
    assert forecast(_signal(), None) is None  # interval not measured yet


def test_files_without_a_usable_forecaster_are_passed_over(tmp_path: Path) -> None:
    _save(tmp_path / "cex_cex__BTC-USDT.npz", None)
    (tmp_path / "cex_cex__ETH-USDT.npz").write_bytes(b"not a model")
    _save(tmp_path / "cex_cex.npz", STEADY)
    forecast = ModelSpreadForecast(tmp_path, ManualClock())
    assert forecast(_signal(), 50.0) == pytest.approx(200.0)
    assert forecast(_signal(symbol="ETH/USDT"), 50.0) == pytest.approx(200.0)


def test_a_changed_file_is_read_again_after_the_check_interval(tmp_path: Path) -> None:
    clock = ManualClock()
    forecast = ModelSpreadForecast(tmp_path, clock, reload_check_s=5.0)
    assert forecast(_signal(), 100.0) is None
    _save(tmp_path / "cex_cex.npz", FORECASTER)
    assert forecast(_signal(), 100.0) is None  # not looked at again yet
    clock.seconds += 5.0
    assert forecast(_signal(), 100.0) == pytest.approx(400.0)


def test_spread_forecast_follows_the_scorer_model_dir(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "symbols": ["BTC/USDT"],
        "venues": {n: {"exchange": "okx", "taker_fee_bps": 1.0} for n in "ab"},
    }
    assert spread_forecast(RootConfig.model_validate(base)) is None
    _save(tmp_path / "cex_cex.npz", FORECASTER)
    built = spread_forecast(RootConfig.model_validate({**base, "scorer": {"model_dir": str(tmp_path)}}))
    assert built is not None
    assert built(_signal(), 10.0) == pytest.approx(40.0)


# ---------------------------------------------------------------- in the engine


def _engine(forecast: SpreadForecast | None, book_gap_ms: int | None) -> RiskEngine:
    market = MarketState(RejectionCounter())
    market.as_of_ms = NOW
    config = RiskConfig.model_validate({"default_feed_lag_ms": 10.0})
    engine = RiskEngine(config, market, {"alpha": 1.0, "beta": 1.0}, forecast)
    books = [
        BookEvent(venue="alpha", symbol="BTC/USDT", ts=NOW, recv_ts=NOW, bids=((99.0, 5.0),), asks=((100.0, 5.0),)),
        BookEvent(venue="beta", symbol="BTC/USDT", ts=NOW, recv_ts=NOW, bids=((101.0, 5.0),), asks=((102.0, 5.0),)),
    ]
    steps = 8 if book_gap_ms is not None else 1
    for i in range(steps):
        for book in books:
            # Each book updates every book_gap_ms on its venue's clock; the key updates on either.
            ts = NOW - (steps - 1 - i) * (book_gap_ms or 0)
            moved = book.model_copy(update={"ts": ts, "recv_ts": ts})
            market.apply(moved)
            engine.on_market_event(moved, NOW)
    return engine


def test_the_window_ends_where_the_forecast_says(tmp_path: Path) -> None:
    _save(tmp_path / "cex_cex.npz", FORECASTER)
    engine = _engine(ModelSpreadForecast(tmp_path, ManualClock()), book_gap_ms=200)
    decision = engine.on_signal(_signal(), NOW, NOW)
    assert decision is not None
    assert decision.action == "execute"
    # Key interval 100 ms (two books, each every 200 ms) × 4 steps, from when the gap was seen (now - 10 ms lag),
    # minus the one-way order time (30 ms).
    assert decision.window.deadline_ts == NOW - 10 + 400 - 30
    assert engine.stats.forecasts == 1


def test_without_a_measured_interval_the_signal_lifetime_holds(tmp_path: Path) -> None:
    _save(tmp_path / "cex_cex.npz", FORECASTER)
    engine = _engine(ModelSpreadForecast(tmp_path, ManualClock()), book_gap_ms=None)
    decision = engine.on_signal(_signal(), NOW, NOW)
    assert decision is not None
    assert decision.window.deadline_ts == NOW - 10 + 60_000 - 30
    assert engine.stats.forecasts == 0


def test_a_failing_forecast_costs_only_the_forecast() -> None:
    def broken(_signal: Signal, _interval: float | None) -> float | None:
        raise RuntimeError("boom")

    engine = _engine(broken, book_gap_ms=200)
    decision = engine.on_signal(_signal(), NOW, NOW)
    assert decision is not None
    assert decision.action == "execute"
    assert decision.window.deadline_ts == NOW - 10 + 60_000 - 30
    assert engine.stats.forecast_errors == 1
