"""build_dataset on a simulated recording: the streaming labels equal a brute-force labeller over every stored book
and evaluation, time ranges partition the samples, and the same files give the same arrays and fingerprint."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bot.config import DEMO_CONFIG_PATH, RootConfig, load_config
from bot.events import BookEvent, MarketEvent
from bot.messages import Signal
from bot.model.dataset import Dataset, build_dataset, default_settings
from bot.model.features import FEATURE_NAMES
from bot.model.labels import LabelSettings, execute
from bot.recording import merge_events, time_key
from bot.replay import Replayer
from bot.simulate import simulate
from strategies.base import Evaluation, OpportunityKey

WINDOW = 8


@pytest.fixture(scope="module")
def demo() -> RootConfig:
    return load_config(DEMO_CONFIG_PATH)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, demo: RootConfig) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "sim.jsonl.gz"
    simulate(demo, 20.0, out)
    return out


@pytest.fixture(scope="module")
def full(recording: Path, demo: RootConfig) -> Dataset:
    return build_dataset([recording], demo, window=WINDOW)


@dataclass
class _Log:
    """Everything a brute-force labeller needs, stored whole."""

    books: dict[tuple[str, str], tuple[list[int], list[BookEvent]]] = field(
        default_factory=lambda: defaultdict(lambda: ([], []))
    )
    evaluations: dict[OpportunityKey, list[tuple[int, int, float]]] = field(default_factory=lambda: defaultdict(list))
    samples: list[tuple[int, int, OpportunityKey, float]] = field(default_factory=list)
    seq: int = 0
    end: int = 0


def _brute_force(
    recording: Path, config: RootConfig, settings: LabelSettings
) -> list[tuple[float, float, float, bool, int]]:
    log = _Log()
    replayer: Replayer

    def on_market(event: MarketEvent) -> None:
        if isinstance(event, BookEvent):
            times, books = log.books[(event.venue, event.symbol)]
            times.append(replayer.clock.now_ms())
            books.append(event)

    def on_evaluations(batch: Sequence[Evaluation]) -> None:
        for ev in batch:
            log.seq += 1
            log.evaluations[ev.key].append((log.seq, replayer.clock.now_ms(), ev.net_edge_bps))

    def sink(signal: Signal) -> None:
        if signal.kind == "cex_cex" and signal.status != "closed":
            key = (signal.kind, signal.symbol, signal.buy_venue, signal.sell_venue)
            log.samples.append((log.seq, replayer.clock.now_ms(), key, signal.size))

    # Datasets are built on the rule scorer's signals, whatever model the config names.
    rule_only = config.model_copy(update={"scorer": config.scorer.model_copy(update={"model_dir": None})})
    replayer = Replayer(rule_only, sink)
    replayer.engine.add_market_listener(on_market)
    replayer.engine.add_evaluation_listener(on_evaluations)
    for event in merge_events([recording]):
        log.end = time_key(event)
        replayer.feed(event)
    labels = []
    for seq, t, key, size in log.samples:
        _, symbol, buy, sell = key
        legs = []
        for venue in (buy, sell):
            times, books = log.books[(venue, symbol)]
            legs.append(books[bisect.bisect_right(times, t + settings.latency_ms) - 1])
        run = execute(legs[0].asks, legs[1].bids, size, settings.fee(buy), settings.fee(sell))
        drops = [at for s, at, net in log.evaluations[key] if s > seq and net <= 0.0 and at <= t + settings.horizon_ms]
        if drops:
            lifetime, censored = float(drops[0] - t), False
        else:
            lifetime, censored = float(min(settings.horizon_ms, log.end - t)), True
        evaluated = sum(1 for s, _, _ in log.evaluations[key] if s <= seq)  # the signal's own evaluation included
        labels.append((run.pnl, run.edge_bps, lifetime, censored, evaluated))
    return labels


def test_streaming_labels_equal_a_brute_force_labeller(recording: Path, demo: RootConfig, full: Dataset) -> None:
    expected = _brute_force(recording, demo, default_settings(demo))
    assert len(full) == len(expected) > 50
    assert full.captured_pnl.tolist() == pytest.approx([row[0] for row in expected], rel=1e-12, abs=1e-12)
    assert full.captured_edge_bps.tolist() == pytest.approx([row[1] for row in expected], rel=1e-12, abs=1e-12)
    assert full.lifetime_ms.tolist() == [row[2] for row in expected]
    assert full.lifetime_censored.tolist() == [row[3] for row in expected]
    assert full.profitable.tolist() == [float(row[0] > 0.0) for row in expected]
    assert full.real_steps.tolist() == [min(row[4], WINDOW) for row in expected]
    # The demo's venues are volatile and lag each other: both outcomes occur.
    assert 0.05 < full.profitable.mean() < 0.95


def test_the_dataset_holds_what_the_signals_said(full: Dataset) -> None:
    n = len(full)
    assert full.windows.shape == (n, WINDOW, len(FEATURE_NAMES)) and full.windows.dtype == np.float32
    assert np.isfinite(full.windows).all()
    assert full.feature_names == FEATURE_NAMES
    assert set(full.status) <= {"open", "update"} and "open" in full.status
    assert all(key[0] == "cex_cex" for key in full.keys)
    assert (np.diff(full.ts) >= 0).all()
    assert (full.size > 0).all() and (full.net_edge_bps >= 1.0).all()
    assert ((full.rule_score > 0) & (full.rule_score < 1)).all()
    net = FEATURE_NAMES.index("net_edge_bps")
    assert full.windows[:, -1, net] == pytest.approx(full.net_edge_bps.astype(np.float32), rel=1e-5)
    assert (full.lifetime_ms >= 0).all() and (full.lifetime_ms <= full.settings.horizon_ms).all()


def test_time_ranges_partition_the_samples(recording: Path, demo: RootConfig, full: Dataset) -> None:
    first = build_dataset([recording], demo, time_range=(0.0, 0.6), window=WINDOW)
    rest = build_dataset([recording], demo, time_range=(0.6, 1.0), window=WINDOW)
    assert 0 < len(first) < len(full) and len(first) + len(rest) == len(full)
    assert first.ts.max() < rest.ts.min()
    for name in ("windows", "ts", "captured_pnl", "lifetime_ms", "rule_score"):
        joined = np.concatenate([getattr(first, name), getattr(rest, name)])
        assert np.array_equal(joined, getattr(full, name)), name
    assert len({first.fingerprint, rest.fingerprint, full.fingerprint}) == 3


def test_same_files_give_identical_arrays_and_fingerprint(recording: Path, demo: RootConfig, full: Dataset) -> None:
    again = build_dataset([recording], demo, window=WINDOW)
    assert again.fingerprint == full.fingerprint
    for name in ("windows", "ts", "net_edge_bps", "size", "profitable", "captured_edge_bps", "lifetime_ms"):
        assert np.array_equal(getattr(again, name), getattr(full, name)), name
    assert again.keys == full.keys and again.status == full.status
    other = build_dataset([recording], demo, window=WINDOW, settings=LabelSettings(latency_ms=100))
    assert other.fingerprint != full.fingerprint
    assert not np.array_equal(other.captured_pnl, full.captured_pnl)


def test_split_by_time(full: Dataset) -> None:
    train, test = full.split(0.7)
    assert len(train) + len(test) == len(full)
    assert abs(len(train) - 0.7 * len(full)) <= 5
    assert train.ts.max() < test.ts.min()
    assert train.keys == full.keys[: len(train)] and np.array_equal(test.profitable, full.profitable[len(train) :])
    assert train.fingerprint != test.fingerprint != full.fingerprint


def test_progress_reaches_the_span(recording: Path, demo: RootConfig) -> None:
    calls: list[tuple[int, int]] = []
    build_dataset(
        [recording], demo, window=2, time_range=(1.0, 1.0), progress=lambda done, total: calls.append((done, total))
    )
    assert calls and calls[-1][0] == calls[-1][1] == 20_000 - 50
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
