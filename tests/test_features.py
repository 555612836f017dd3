"""FeatureTracker: hand-built books whose features are computed by hand, ring order, padding, selection, forgetting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.config import RootConfig, parse_config
from bot.events import BookEvent, GasEvent, Level, TradeEvent
from bot.messages import Signal
from bot.model.features import FEATURE_NAMES, FeatureTracker, slog
from bot.replay import Replayer
from strategies.base import Evaluation

T0 = 1_763_700_000_000
SYMBOL = "BTC/USDT"
KEY = ("cex_cex", SYMBOL, "a", "b")
F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def book(venue: str, ms: int, bids: list[Level], asks: list[Level], lag: int = 0) -> BookEvent:
    return BookEvent(venue=venue, symbol=SYMBOL, ts=T0 + ms - lag, recv_ts=T0 + ms, bids=tuple(bids), asks=tuple(asks))


def quote(venue: str, ms: int, mid: float, lag: int = 0) -> BookEvent:
    """A one-level book of size 1 either side, 1 tick around `mid`."""
    return book(venue, ms, [(mid - 0.01, 1.0)], [(mid + 0.01, 1.0)], lag)


def evaluation(
    ms: int, net: float = 5.0, size: float = 2.0, buy: str = "a", sell: str = "b", **kw: float
) -> Evaluation:
    fields: dict[str, object] = {
        "kind": "cex_cex",
        "symbol": SYMBOL,
        "buy_venue": buy,
        "sell_venue": sell,
        "ts": T0 + ms,
        "buy_book_ts": T0 + ms,
        "sell_book_ts": T0 + ms,
        "size": size,
        "buy_price": 100.0,
        "sell_price": 100.1,
        "gross_edge_bps": net + 5.0,
        "net_edge_bps": net,
        "fees": 0.1,
        "tradeable": size > 0.0,
    }
    fields.update(kw)
    return Evaluation(**fields)  # type: ignore[arg-type]


def newest(tracker: FeatureTracker, key: tuple[str, str, str, str] = KEY) -> dict[str, float]:
    row = tracker.windows([key])[0, -1]
    return {name: float(row[i]) for i, name in enumerate(tracker.features)}


def test_edge_depth_imbalance_and_spread_by_hand() -> None:
    tracker = FeatureTracker(window=4)
    # Buy venue a: asks within 5 bps of 100.00 reach 100.05, so 1 + 3 = 4 units count; 100.2 does not.
    tracker.on_market_event(book("a", 0, [(99.9, 1.0), (99.8, 1.0)], [(100.0, 1.0), (100.04, 3.0), (100.2, 4.0)]))
    # Sell venue b: bids within 5 bps of 101.0 reach 100.9495: 2 + 0.5 units.
    tracker.on_market_event(book("b", 0, [(101.0, 2.0), (100.96, 0.5), (100.9, 9.0)], [(101.1, 1.0)]))
    tracker.on_evaluations(
        [evaluation(0, net=7.5, size=2.0, gross_edge_bps=12.5, buy_book_ts=T0, sell_book_ts=T0 - 30)]
    )
    f = newest(tracker)
    assert f["net_edge_bps"] == pytest.approx(7.5)
    assert f["gross_edge_bps"] == pytest.approx(12.5)
    assert f["notional_log"] == pytest.approx(math.log1p(200.0))
    assert f["tradeable"] == 1.0
    assert f["buy_depth_cover"] == pytest.approx(math.log1p(4.0 / 2.0))
    assert f["sell_depth_cover"] == pytest.approx(math.log1p(2.5 / 2.0))
    # Top five levels: a has 2 bid vs 8 ask units, b 11.5 bid vs 1 ask.
    assert f["buy_imbalance"] == pytest.approx((2.0 - 8.0) / 10.0)
    assert f["sell_imbalance"] == pytest.approx((11.5 - 1.0) / 12.5)
    assert f["buy_spread_bps"] == pytest.approx(0.1 / 99.95 * 1e4, rel=1e-5)
    assert f["sell_spread_bps"] == pytest.approx(0.1 / 101.05 * 1e4, rel=1e-5)
    assert f["book_skew_slog"] == pytest.approx(math.log1p(30.0))
    assert f["gas_base_fee_log"] == 0.0 and f["pool_liquidity_log"] == 0.0


def test_a_size_of_zero_reports_capped_cover() -> None:
    tracker = FeatureTracker(window=2)
    tracker.on_market_event(quote("a", 0, 100.0))
    tracker.on_market_event(quote("b", 0, 100.0))
    tracker.on_evaluations([evaluation(0, net=-4.0, size=0.0)])
    f = newest(tracker)
    assert f["tradeable"] == 0.0 and f["notional_log"] == 0.0
    assert f["buy_depth_cover"] == pytest.approx(math.log1p(1_000.0))


def test_returns_volatility_rate_and_time_since_move_by_hand() -> None:
    tracker = FeatureTracker(window=4)
    tracker.on_market_event(quote("a", 1_000, 100.0))
    tracker.on_market_event(quote("b", 1_200, 100.0))
    tracker.on_market_event(quote("a", 1_500, 101.0))  # a moves last
    tracker.on_market_event(quote("b", 2_500, 100.0))  # b updates without moving: the clock reaches 2,500
    tracker.on_evaluations([evaluation(2_500)])
    f = newest(tracker)
    r = math.log(101.0 / 100.0)
    assert f["buy_ret_last_bps"] == pytest.approx(r * 1e4, rel=1e-5)
    assert f["sell_ret_last_bps"] == 0.0
    # The EWMA (1 s) held 100 until 1,500, then decays towards 101 for 1 s.
    ewma = 101.0 + (100.0 - 101.0) * math.exp(-1.0)
    assert f["buy_ret_1s_bps"] == pytest.approx(math.log(101.0 / ewma) * 1e4, rel=1e-5)
    assert f["sell_ret_1s_bps"] == pytest.approx(0.0, abs=1e-9)
    vol = math.sqrt(r * r * math.exp(-0.1) / 10.0) * 1e4  # one squared return, 1 s old, per 10 s
    assert f["buy_vol_log"] == pytest.approx(math.log1p(vol), rel=1e-5)
    assert f["sell_vol_log"] == 0.0
    rate = (1.0 * math.exp(-0.05) + 1.0) * math.exp(-0.1) / 10.0  # updates at 1,000 and 1,500, seen at 2,500
    assert f["buy_rate_log"] == pytest.approx(math.log1p(rate), rel=1e-5)
    assert f["moved_last"] == 1.0
    assert f["buy_since_move_log"] == pytest.approx(math.log1p(1_000.0))
    assert f["sell_since_move_log"] == pytest.approx(math.log1p(1_300.0))  # b's mid has not changed since 1,200
    # The other direction sees the same legs swapped.
    tracker.on_evaluations([evaluation(2_500, buy="b", sell="a")])
    g = newest(tracker, ("cex_cex", SYMBOL, "b", "a"))
    assert g["moved_last"] == -1.0
    assert g["sell_ret_last_bps"] == pytest.approx(f["buy_ret_last_bps"])


def test_feed_lag_and_its_jump() -> None:
    tracker = FeatureTracker(window=2)
    tracker.on_market_event(quote("a", 1_000, 100.0, lag=100))
    tracker.on_market_event(quote("a", 1_100, 100.0, lag=200))
    tracker.on_market_event(quote("b", 1_100, 100.0))
    tracker.on_evaluations([evaluation(1_100)])
    f = newest(tracker)
    assert f["buy_lag_slog"] == pytest.approx(math.log1p(200.0))
    assert f["buy_lag_jump_slog"] == pytest.approx(math.log1p(200.0 - 105.0))  # EWMA 100 + 0.05 × 100
    assert f["sell_lag_slog"] == 0.0


def test_traded_volume_and_flow() -> None:
    tracker = FeatureTracker(window=2)
    tracker.on_market_event(quote("a", 1_000, 100.0))
    tracker.on_market_event(quote("b", 1_000, 100.0))
    for side, size in (("buy", 1.0), ("sell", 0.5)):
        trade = TradeEvent(
            venue="b", symbol=SYMBOL, ts=T0 + 1_000, recv_ts=T0 + 1_000, price=100.0, size=size, side=side
        )
        tracker.on_market_event(trade)
    tracker.on_evaluations([evaluation(1_000)])
    f = newest(tracker)
    assert f["sell_volume_log"] == pytest.approx(math.log1p(150.0 / 10.0))
    assert f["sell_flow"] == pytest.approx(50.0 / 150.0)
    assert f["buy_volume_log"] == 0.0 and f["buy_flow"] == 0.0


def test_gas_of_the_chain_when_the_evaluation_assumes_none() -> None:
    tracker = FeatureTracker(window=2)
    tracker.on_market_event(quote("a", 0, 100.0))
    tracker.on_market_event(quote("b", 0, 100.0))
    gas = GasEvent(chain="ethereum", block=1, ts=T0, base_fee_gwei=14.0, priority_fee_gwei=1.5, gas_used_ratio=0.5)
    tracker.on_market_event(gas)
    tracker.on_evaluations([evaluation(0), evaluation(0, buy="b", sell="a", base_fee_gwei=30.0, priority_fee_gwei=2.0)])
    assert newest(tracker)["gas_base_fee_log"] == pytest.approx(math.log1p(14.0))
    assert newest(tracker)["gas_tip_log"] == pytest.approx(math.log1p(1.5))
    assert newest(tracker, ("cex_cex", SYMBOL, "b", "a"))["gas_base_fee_log"] == pytest.approx(math.log1p(30.0))


def test_short_windows_repeat_their_oldest_vector_and_rings_run_oldest_to_newest() -> None:
    tracker = FeatureTracker(window=4)
    tracker.on_market_event(quote("a", 0, 100.0))
    tracker.on_market_event(quote("b", 0, 100.0))
    other = ("cex_cex", SYMBOL, "b", "a")
    tracker.on_evaluations([evaluation(0, net=1.0)])
    tracker.on_evaluations([evaluation(0, net=2.0), evaluation(0, net=-9.0, buy="b", sell="a")])
    windows = tracker.windows([KEY, other, ("cex_cex", SYMBOL, "a", "zz")])
    assert windows.shape == (3, 4, len(FEATURE_NAMES)) and windows.dtype == np.float32
    assert windows[0, :, F["net_edge_bps"]].tolist() == [1.0, 1.0, 1.0, 2.0]
    assert windows[1, :, F["net_edge_bps"]].tolist() == [-9.0] * 4
    assert not windows[2].any()  # a key never evaluated: zeros
    for net in range(3, 8):
        tracker.on_evaluations([evaluation(0, net=float(net))])
    assert tracker.windows([KEY])[0, :, F["net_edge_bps"]].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_time_between_a_keys_vectors() -> None:
    tracker = FeatureTracker(window=3)
    tracker.on_market_event(quote("a", 0, 100.0))
    tracker.on_market_event(quote("b", 0, 100.0))
    tracker.on_evaluations([evaluation(0)])
    tracker.on_market_event(quote("b", 250, 100.0))
    tracker.on_evaluations([evaluation(250)])
    column = tracker.windows([KEY])[0, :, F["since_prev_log"]]
    assert column.tolist() == pytest.approx([0.0, 0.0, math.log1p(250.0)])


def test_a_feature_subset_comes_in_the_order_asked() -> None:
    tracker = FeatureTracker(window=2, features=("net_edge_bps", "gross_edge_bps"))
    tracker.on_market_event(quote("a", 0, 100.0))
    tracker.on_market_event(quote("b", 0, 100.0))
    tracker.on_evaluations([evaluation(0, net=3.0)])
    assert tracker.windows([KEY]).tolist() == [[[3.0, 8.0], [3.0, 8.0]]]
    with pytest.raises(ValueError, match="unknown features"):
        FeatureTracker(features=("net_edge_bps", "tea_leaves"))


def test_forget_drops_idle_keys_and_reuses_their_slots() -> None:
    tracker = FeatureTracker(window=2)
    tracker.on_market_event(quote("a", 0, 100.0))
    tracker.on_market_event(quote("b", 0, 100.0))
    tracker.on_evaluations([evaluation(0, net=1.0, buy="b", sell="a")])
    tracker.on_market_event(quote("a", 5_000, 100.0))
    tracker.on_market_event(quote("b", 5_000, 100.0))
    tracker.on_evaluations([evaluation(5_000, net=2.0)])
    assert tracker.forget(T0 + 1_000) == 1
    assert tracker.keys == [KEY]
    assert not tracker.windows([("cex_cex", SYMBOL, "b", "a")]).any()
    tracker.on_evaluations([evaluation(5_000, net=3.0, buy="b", sell="a")])  # takes the freed slot
    assert tracker.windows([("cex_cex", SYMBOL, "b", "a"), KEY])[:, -1, F["net_edge_bps"]].tolist() == [3.0, 2.0]
    assert tracker.forget(T0 + 10_000) == 2 and tracker.keys == []


def test_many_keys_grow_the_store() -> None:
    tracker = FeatureTracker(window=2)
    venues = [f"v{i}" for i in range(8)]
    for venue in venues:
        tracker.on_market_event(quote(venue, 0, 100.0))
    batch = [
        evaluation(0, net=float(i * 8 + j), buy=b, sell=s) for i, b in enumerate(venues) for j, s in enumerate(venues)
    ]
    tracker.on_evaluations(batch)
    keys = [("cex_cex", SYMBOL, b, s) for b in venues for s in venues]
    assert tracker.windows(keys)[:, -1, F["net_edge_bps"]].tolist() == [float(i) for i in range(64)]


def _config() -> RootConfig:
    return parse_config(
        {
            "symbols": [SYMBOL],
            "venues": {
                "a": {"exchange": "okx", "taker_fee_bps": 2.0},
                "b": {"exchange": "bybit", "taker_fee_bps": 3.0},
            },
        }
    )


def test_on_the_engine_a_signals_window_ends_with_its_own_evaluation() -> None:
    """Registered on an engine, the window read when a signal is emitted already holds that evaluation."""
    seen: list[tuple[Signal, np.ndarray]] = []
    tracker = FeatureTracker(window=3)

    def sink(signal: Signal) -> None:
        key = (signal.kind, signal.symbol, signal.buy_venue, signal.sell_venue)
        seen.append((signal, tracker.windows([key])[0]))

    replayer = Replayer(_config(), sink)
    replayer.engine.add_market_listener(tracker.on_market_event)
    replayer.engine.add_evaluation_listener(tracker.on_evaluations)
    replayer.feed(book("a", 0, [(99.9, 1.0)], [(100.0, 1.0)]))
    replayer.feed(book("b", 100, [(100.0, 1.0)], [(100.1, 1.0)]))  # no gap after fees
    replayer.feed(book("b", 200, [(101.0, 1.0)], [(101.1, 1.0)]))  # a gap: buy a, sell b
    (signal, window), *_ = seen
    assert signal.status == "open"
    assert window[-1, F["net_edge_bps"]] == pytest.approx(signal.net_edge_bps, rel=1e-6)
    assert window[0, F["net_edge_bps"]] < 0.0  # the window reaches back before the gap opened
    assert window[-1, F["since_prev_log"]] == pytest.approx(math.log1p(100.0))
    assert window[-1, F["buy_since_move_log"]] == pytest.approx(math.log1p(200.0))
    assert window[-1, F["moved_last"]] == -1.0


def test_slog_is_odd() -> None:
    assert slog(0.0) == 0.0
    assert slog(-99.0) == pytest.approx(-math.log(100.0))
