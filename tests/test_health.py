"""Feed health: state changes, staleness judged on receive time, lag and venue clock offset."""

from __future__ import annotations

import numpy as np

from bot.feeds.health import FeedHealth, LatencyTracker, StreamState


def test_stream_goes_live_stale_and_back() -> None:
    health = FeedHealth()
    changes: list[tuple[str, str, StreamState]] = []
    health.add_listener(lambda venue, symbol, state: changes.append((venue, symbol, state)))
    health.register("okx", "BTC/USDT", now_ms=1_000)
    health.on_book("okx", "BTC/USDT", recv_ms=1_100, exchange_ms=1_090)
    assert health.is_live("okx", "BTC/USDT")
    assert health.mark_stale("okx", now_ms=2_000, stale_after_ms=1_000) == []
    assert health.mark_stale("okx", now_ms=2_101, stale_after_ms=1_000) == ["BTC/USDT"]
    assert not health.is_live("okx", "BTC/USDT")
    assert health.venue("okx").stale_intervals == 1
    assert health.unhealthy_for("okx", now_ms=2_600) == 499
    health.on_book("okx", "BTC/USDT", recv_ms=2_700, exchange_ms=None)
    assert health.is_live("okx", "BTC/USDT")
    assert [state for _, _, state in changes] == [StreamState.LIVE, StreamState.STALE, StreamState.LIVE]


def test_faults_and_reconnects_move_streams_to_resyncing() -> None:
    health = FeedHealth()
    for symbol in ("BTC/USDT", "ETH/USDT"):
        health.on_book("bybit", symbol, recv_ms=10, exchange_ms=9)
    health.on_fault("bybit", "BTC/USDT", "gap", StreamState.RESYNCING, now_ms=20)
    assert health.state("bybit", "BTC/USDT") is StreamState.RESYNCING
    assert health.state("bybit", "ETH/USDT") is StreamState.LIVE
    assert health.worst_state("bybit") is StreamState.RESYNCING
    health.on_reconnect("bybit", now_ms=30)
    assert health.state("bybit", "ETH/USDT") is StreamState.RESYNCING
    assert health.venue("bybit").faults["gap"] == 1
    assert health.venue("bybit").reconnects == 1


def test_clock_offset_is_the_lower_envelope_of_lag_and_drift_is_flagged() -> None:
    """A venue clock 1.3 s behind ours (as in the real Binance capture) plus random transport delay."""
    rng = np.random.default_rng(1)
    tracker = LatencyTracker(window=500, drift_threshold_ms=100.0)
    for delay in rng.exponential(3.0, 500):
        tracker.add(1_300.0 + delay)
    stats = tracker.stats()
    assert stats is not None
    assert 1_300.0 <= stats.clock_offset_ms < 1_301.0
    assert stats.p50_ms > stats.clock_offset_ms
    assert stats.p99_ms > stats.p50_ms
    assert not stats.drifting
    for delay in rng.exponential(3.0, 500):
        tracker.add(1_600.0 + delay)  # the venue's clock stepped by 300 ms
    stats = tracker.stats()
    assert stats is not None
    assert stats.drifting
    assert 290.0 < stats.drift_ms < 310.0
