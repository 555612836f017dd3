"""`arbbot bench all`: a short run writes every documented key as a positive number (the goals are not checked),
the book driver triggers what it says it does, and the summaries add up."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.bench.books import BookDriver, MarketShape
from bot.bench.report import format_report
from bot.bench.suite import GOALS, goals, lookup, scaling, throughput
from bot.cli import app
from bot.events import Level

REQUIRED = (
    "tick_to_signal.p50_ms",
    "tick_to_signal.p99_ms",
    "tick_to_signal.p999_ms",
    "tick_to_signal.raw_redis_p50_ms",
    "throughput.pipeline_per_s",
    "throughput.ccxt_per_s",
    "rss.start_mb",
    "rss.end_mb",
)
"""The keys issue 7 names."""

ALSO = (
    "tick_to_signal.p50_vs_raw_redis",
    "tick_to_signal.by_scorer.model.p50_ms",
    "tick_to_signal.by_scorer.model.p99_ms",
    "tick_to_signal.by_scorer.model.p999_ms",
    "throughput.ratio",
    "throughput.model.pipeline_per_s",
    "throughput.model.ratio",
    "throughput.model.lstm_us_per_update",
    "scaling.symbols_growth",
    "scaling.per_evaluation_growth",
    "scaling.model.symbols_growth",
    "rss.peak_mb",
)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `arbbot bench all --short` in a subprocess (it and its children run under the loopback guard; it starts
    a private Redis of its own)."""
    from conftest import NETGUARD_DIR, REPO_ROOT

    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD_DIR), str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "bot", "bench", "all", "--short", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    result["_stdout"] = done.stdout
    return result


def test_short_run_writes_every_documented_key(short_run: dict[str, Any]) -> None:
    for path in REQUIRED + ALSO:
        assert _positive(lookup(short_run, path)), path
    assert short_run["short"] is True
    assert short_run["parts"] == ["throughput", "scaling", "latency", "rss"]


def test_each_scorer_ran_as_named(short_run: dict[str, Any]) -> None:
    """The rule run's signals say `rule`; the model run's carry the LSTM's name, so the LSTM scored them."""
    by_scorer = short_run["tick_to_signal"]["by_scorer"]
    assert set(by_scorer["rule"]["models"]) == {"rule"}
    assert [name.split("@")[0] for name in by_scorer["model"]["models"]] == ["lstm"]
    for row in by_scorer.values():
        assert row["triggering_updates"] > 0
        assert row["updates_with_signals"] > 0
        assert row["role"]["rejected"] == 0
        assert row["role"]["errors"] == 0


def test_raw_redis_reference_received_what_was_sent(short_run: dict[str, Any]) -> None:
    raw = short_run["tick_to_signal"]["raw_redis"]
    assert raw["received"] == raw["sent"] > raw["samples"] > 0


def test_rss_samples_span_the_run(short_run: dict[str, Any]) -> None:
    rss = short_run["rss"]
    times = [t for t, _ in rss["samples"]]
    assert times[0] == 0 and times == sorted(times) and times[-1] >= rss["duration_s"]
    assert rss["start_mb"] == rss["samples"][0][1] and rss["end_mb"] == rss["samples"][-1][1]
    assert rss["peak_mb"] == max(mb for _, mb in rss["samples"])


def test_goals_and_report_cover_every_measured_figure(short_run: dict[str, Any]) -> None:
    assert [row["figure"] for row in short_run["goals"]] == [path for path, *_ in GOALS]
    report = format_report(short_run)
    assert report.count("\n| ") >= len(GOALS)
    assert "Short run" in report
    assert "| raw Redis PUBLISH → PSUBSCRIBE |" in short_run["_stdout"]


def test_unknown_part_is_a_user_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["bench", "all", "--only", "latency,speed", "--json", str(tmp_path / "r.json")])
    assert done.exit_code == 2
    assert "unknown parts ['speed']" in done.output
    assert not (tmp_path / "r.json").exists()


# --- the book driver ---------------------------------------------------------------------------------


class _Recorder:
    """Stands in for a venue server: keeps every book it is given, and "writes" its frames on `send_all()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.books: list[tuple[str, int, tuple[Level, ...], tuple[Level, ...]]] = []
        self._unsent: list[Callable[[], None]] = []

    def publish_book(
        self,
        symbol: str,
        ts: int,
        bids: tuple[Level, ...],
        asks: tuple[Level, ...],
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.books.append((symbol, ts, bids, asks))
        if on_sent is not None:
            self._unsent.append(on_sent)

    def send_all(self) -> None:
        for sent in self._unsent:
            sent()
        self._unsent.clear()


def test_driver_crosses_a_known_share_of_updates_with_unique_ts_per_symbol() -> None:
    shape = MarketShape(venues=3, symbols=4, cross_period=5)
    servers = [_Recorder(name) for name in shape.venue_names()]
    driver = BookDriver(shape, servers)  # type: ignore[arg-type]  # anything with publish_book will do
    driver.publish_all()
    driver.recording = True
    updates = 3 * 4 * 5 * 20  # whole crossing cycles of every stream
    for _ in range(updates):
        driver()
    assert driver.recorded_updates == updates and not driver.stamps  # a book is stamped when its frame leaves
    for server in servers:
        server.send_all()
    assert len(driver.stamps) == updates
    assert len(driver.triggering) == round(updates * shape.triggering_share)
    seen: set[tuple[str, int]] = set()
    for server in servers:
        for symbol, ts, bids, asks in server.books:
            assert (symbol, ts) not in seen
            seen.add((symbol, ts))
            assert len(bids) == len(asks) == shape.levels
            assert bids[0][0] < asks[0][0]
            assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
            assert [p for p, _ in asks] == sorted(p for p, _ in asks)


def test_a_crossed_book_beats_the_others_after_fees() -> None:
    shape = MarketShape(venues=2, symbols=1, cross_period=2)
    servers = [_Recorder(name) for name in shape.venue_names()]
    driver = BookDriver(shape, servers)  # type: ignore[arg-type]
    driver.publish_all()
    for _ in range(8):
        driver()
    crossing, other = servers[0].books, servers[1].books
    crossed = [book for book in crossing[1:] if book[2][0][0] > other[-1][3][0][0]]
    assert len(crossed) == len(crossing[1:]) // 2  # every other update of the crossing venue
    for _, _, bids, _ in crossed:
        edge_bps = (bids[0][0] / other[-1][3][0][0] - 1.0) * 1e4
        assert edge_bps > 2 * 3.0 + 1.0  # both taker fees and the default minimum net edge


# --- summaries ---------------------------------------------------------------------------------------


def _feeds() -> dict[str, Any]:
    row = {"frames": 100, "ccxt_per_s": 1_000.0, "pipeline_per_s": 500.0}
    model = {"pipeline_per_s": 250.0, "lstm_us_per_update": 4.0, "scored_per_update": 0.1, "lstm_us_per_batch": 40.0}
    points = [
        {"venues": 2, "symbols": 1, "evaluations_per_update": 2, "us_per_update": 10.0},
        {"venues": 3, "symbols": 5, "evaluations_per_update": 4, "us_per_update": 16.0},
        {"venues": 3, "symbols": 20, "evaluations_per_update": 4, "us_per_update": 20.0},
    ]
    return {
        "protocols": {"okx": dict(row), "bybit": {**row, "pipeline_per_s": 250.0}},
        "scaling": points,
        "model_scorer": {
            "model": "lstm@test",
            "protocols": {"okx": dict(model), "bybit": dict(model)},
            "scaling": [{**p, "us_per_update": 2 * p["us_per_update"]} for p in points],
        },
    }


def test_throughput_adds_protocols_by_total_time() -> None:
    section = throughput(_feeds())
    # 200 frames in 0.1 + 0.1 s (ccxt) and 0.2 + 0.4 s (pipeline).
    assert section["ccxt_per_s"] == 1_000.0
    assert section["pipeline_per_s"] == pytest.approx(333.3, abs=0.1)
    assert section["ratio"] == pytest.approx(1 / 3, abs=1e-4)
    assert section["model"]["pipeline_per_s"] == 250.0
    assert section["model"]["extra_us_per_update"] == pytest.approx(4_000 - 3_000, abs=0.01)


def test_scaling_flatness() -> None:
    section = scaling(_feeds())
    assert section["symbols_growth"] == 1.25  # 3 × 20 against 3 × 5
    assert section["per_evaluation_growth"] == 1.0  # 20 / 4 against 10 / 2
    assert section["model"]["symbols_growth"] == 1.25
    assert [p["us_per_evaluation"] for p in section["points"]] == [5.0, 4.0, 5.0]


def test_goals_compare_each_figure_with_its_limit() -> None:
    rows = {row["figure"]: row for row in goals({"throughput": {"ratio": 0.4}, "rss": {"end_mb": 200.0}})}
    assert set(rows) == {"throughput.ratio", "rss.end_mb"}
    assert rows["throughput.ratio"]["met"] is False and rows["throughput.ratio"]["of_goal"] == 0.8
    assert rows["rss.end_mb"]["met"] is True and rows["rss.end_mb"]["goal"] == "≤ 400"
