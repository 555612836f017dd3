"""Labels on hand-built recordings: execution after the latency, fees, partial fills, lifetimes and censoring."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bot.config import RootConfig, parse_config
from bot.events import BookEvent, Level
from bot.model.dataset import Dataset, build_dataset
from bot.model.labels import LabelSettings, execute
from bot.recording import RecordingWriter

T0 = 1_763_700_000_000
SYMBOL = "BTC/USDT"


def book(venue: str, ms: int, bids: list[Level], asks: list[Level]) -> BookEvent:
    return BookEvent(venue=venue, symbol=SYMBOL, ts=T0 + ms, recv_ts=T0 + ms, bids=tuple(bids), asks=tuple(asks))


A = [(99.9, 5.0)], [(100.0, 1.0), (100.5, 5.0)]  # buy venue a: one unit at 100
GAP = [(101.0, 1.0), (100.2, 5.0)], [(101.1, 5.0)]  # sell venue b: one unit bid at 101
SHUT = [(100.0, 5.0)], [(100.1, 5.0)]  # b bids no more than a asks: the gap is shut


def config(fees: dict[str, float] | None = None) -> RootConfig:
    fees = fees or {"a": 2.0, "b": 3.0}
    return parse_config(
        {
            "symbols": [SYMBOL],
            "venues": {
                "a": {"exchange": "okx", "taker_fee_bps": fees["a"]},
                "b": {"exchange": "bybit", "taker_fee_bps": fees["b"]},
            },
        }
    )


def record(tmp_path: Path, events: list[BookEvent]) -> Path:
    path = tmp_path / "hand.jsonl"
    with RecordingWriter(path) as writer:
        for event in events:
            writer.write(event)
    return path


def dataset(
    tmp_path: Path, events: list[BookEvent], settings: LabelSettings | None = None, fees: dict[str, float] | None = None
) -> Dataset:
    return build_dataset([record(tmp_path, events)], config(fees), settings=settings, window=4)


def opening(*later: BookEvent) -> list[BookEvent]:
    """a's book at 0, b opens the gap at 1,000 (the sample: buy 1 on a at 100, sell on b at 101), then `later`."""
    return [book("a", 0, *A), book("b", 1_000, *GAP), *later]


def test_a_gap_that_shuts_before_the_latency_is_unprofitable(tmp_path: Path) -> None:
    ds = dataset(tmp_path, opening(book("b", 1_100, *SHUT), book("a", 1_300, *A)))
    assert len(ds) == 1 and ds.status == ["open"] and ds.ts.tolist() == [T0 + 1_000]
    assert ds.size[0] == pytest.approx(1.0) and ds.buy_price[0] == pytest.approx(100.0)
    # At 1,250: buy 1 at 100 on a, sell 1 at 100 on b; fees 2 + 3 bps.
    assert ds.profitable.tolist() == [0.0]
    assert ds.captured_pnl[0] == pytest.approx(-0.05)
    assert ds.captured_edge_bps[0] == pytest.approx(-5.0)
    assert ds.lifetime_ms.tolist() == [100.0] and ds.lifetime_censored.tolist() == [False]


def test_a_gap_that_stays_open_is_profitable(tmp_path: Path) -> None:
    ds = dataset(tmp_path, opening(book("a", 1_300, *A), book("b", 1_900, *SHUT)))
    pnl = 101.0 - 100.0 - 100.0 * 2e-4 - 101.0 * 3e-4
    # a's book at 1,300 brings the two books' times closer: the rule score rises and the gap is re-signalled.
    assert ds.status == ["open", "update"]
    assert ds.profitable.tolist() == [1.0, 1.0]
    assert ds.captured_pnl[0] == pytest.approx(pnl)
    assert ds.captured_edge_bps[0] == pytest.approx(pnl / 100.0 * 1e4)
    assert ds.filled[0] == pytest.approx(1.0)
    assert ds.lifetime_ms.tolist() == [900.0, 600.0] and not ds.lifetime_censored.any()


def test_the_books_in_force_at_t_plus_latency_include_one_received_exactly_then(tmp_path: Path) -> None:
    """A book received at t + latency counts; one received a millisecond later does not."""
    at = dataset(tmp_path, opening(book("b", 1_250, *SHUT), book("a", 1_400, *A)))
    after = dataset(tmp_path, opening(book("b", 1_251, *SHUT), book("a", 1_400, *A)))
    assert at.profitable.tolist() == [0.0] and at.lifetime_ms.tolist() == [250.0]
    assert after.profitable.tolist() == [1.0] and after.lifetime_ms.tolist() == [251.0]


def test_real_steps_count_the_keys_evaluations_and_the_rest_is_padding(tmp_path: Path) -> None:
    # b's book at 1,000 is the key's first evaluation, a's at 1,300 its second: windows of 4 hold 1 and 2 real steps,
    # after padding that repeats the first (whose time since the previous vector is 0).
    ds = dataset(tmp_path, opening(book("a", 1_300, *A), book("b", 1_900, *SHUT)))
    assert ds.real_steps.tolist() == [1, 2]
    since_prev = ds.feature_names.index("since_prev_log")
    for i, real in enumerate(ds.real_steps):
        first = 4 - real
        assert (ds.windows[i, :first] == ds.windows[i, first]).all()
        assert ds.windows[i, first, since_prev] == 0.0
    assert ds.windows[1, 3, since_prev] == pytest.approx(math.log1p(300.0))


def test_latency_setting_moves_the_execution(tmp_path: Path) -> None:
    events = opening(book("b", 1_100, *SHUT), book("a", 1_300, *A))
    fast = dataset(tmp_path, events, LabelSettings(latency_ms=50, fee_bps={"a": 2.0, "b": 3.0}))
    assert fast.profitable.tolist() == [1.0]
    assert fast.settings.latency_ms == 50


def test_fees_come_from_the_config_and_unknown_venues_pay_the_default(tmp_path: Path) -> None:
    events = opening(book("a", 1_300, *A))
    from_config = dataset(tmp_path, events, fees={"a": 1.0, "b": 4.0})
    assert from_config.captured_pnl[0] == pytest.approx(1.0 - 100.0 * 1e-4 - 101.0 * 4e-4)
    assert from_config.settings.fee("b") == 4.0
    partly_known = dataset(tmp_path, events, LabelSettings(fee_bps={"a": 1.0}, default_fee_bps=20.0))
    assert partly_known.captured_pnl[0] == pytest.approx(1.0 - 100.0 * 1e-4 - 101.0 * 20e-4)


def test_a_book_thinner_than_the_size_fills_what_it_holds(tmp_path: Path) -> None:
    thin = [(101.0, 0.4)], [(101.1, 5.0)]
    ds = dataset(tmp_path, opening(book("b", 1_200, *thin), book("a", 1_300, *A)))
    first = 0  # the sample of the open; the thinner book re-signals an update with a smaller size
    assert ds.status[first] == "open" and ds.size[first] == pytest.approx(1.0)
    assert ds.filled[first] == pytest.approx(0.4)
    pnl = 0.4 * 101.0 - 0.4 * 100.0 - 40.0 * 2e-4 - 40.4 * 3e-4
    assert ds.captured_pnl[first] == pytest.approx(pnl)
    assert ds.captured_edge_bps[first] == pytest.approx(pnl / 40.0 * 1e4)


def test_lifetime_is_censored_at_the_horizon_and_at_the_end(tmp_path: Path) -> None:
    events = opening(*(book("a", ms, *A) for ms in range(1_100, 3_001, 100)))
    short = dataset(tmp_path, events, LabelSettings(horizon_ms=500, fee_bps={"a": 2.0, "b": 3.0}))
    # a's books drift away from b's in time, so the rule score falls and the gap is re-signalled as it goes.
    assert len(short) > 2 and short.lifetime_censored.all()
    assert short.lifetime_ms.tolist() == [min(500.0, T0 + 3_000 - t) for t in short.ts.tolist()]
    ends = dataset(tmp_path, events)
    assert ends.lifetime_ms.tolist() == [float(T0 + 3_000 - t) for t in ends.ts.tolist()]
    assert ends.lifetime_ms[0] == 2_000.0 and ends.lifetime_censored.all()
    # A drop exactly at the horizon is a lifetime, not a censoring.
    shut = dataset(tmp_path, opening(book("b", 1_500, *SHUT)), LabelSettings(horizon_ms=500, fee_bps={}))
    assert shut.lifetime_ms.tolist() == [500.0] and shut.lifetime_censored.tolist() == [False]


def test_updates_are_samples_labelled_from_their_own_time(tmp_path: Path) -> None:
    wider = [(101.5, 1.0), (100.2, 5.0)], [(101.6, 5.0)]
    ds = dataset(tmp_path, opening(book("b", 1_100, *wider), book("b", 1_600, *SHUT), book("a", 1_700, *A)))
    assert ds.status == ["open", "update"]
    assert len(set(ds.opportunity_ids)) == 1
    assert ds.ts.tolist() == [T0 + 1_000, T0 + 1_100]
    assert ds.lifetime_ms.tolist() == [600.0, 500.0]
    assert ds.captured_pnl[1] == pytest.approx(1.5 - 100.0 * 2e-4 - 101.5 * 3e-4)  # executed at 1,350 on `wider`


def test_execute_walks_levels_on_both_sides() -> None:
    asks = [(100.0, 1.0), (100.5, 1.0)]
    bids = [(101.0, 0.5), (100.8, 2.0)]
    run = execute(asks, bids, 1.5, 10.0, 0.0)
    assert run.filled == pytest.approx(1.5)
    assert run.cost == pytest.approx(100.0 + 0.5 * 100.5)
    assert run.proceeds == pytest.approx(0.5 * 101.0 + 1.0 * 100.8)
    assert run.fees == pytest.approx(run.cost * 1e-3)
    assert run.edge_bps == pytest.approx(run.pnl / run.cost * 1e4)
    assert execute(asks, bids, 10.0, 0.0, 0.0).filled == pytest.approx(2.0)


def test_settings_meta_round_trip_and_checks() -> None:
    settings = LabelSettings(latency_ms=100, fee_bps={"b": 3.0, "a": 2.0}, default_fee_bps=7.0, horizon_ms=9_000)
    assert LabelSettings.from_meta(settings.to_meta()) == settings
    assert list(settings.to_meta()["fee_bps"]) == ["a", "b"]
    assert settings.fee("a") == 2.0 and settings.fee("zzz") == 7.0
    with pytest.raises(ValueError):
        LabelSettings(latency_ms=-1)
