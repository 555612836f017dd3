"""`arbbot backtest`: a simulator recording through replay → strategies → scorer → Redis → risk → paper.

1. Two runs of the same recording write the same report.json (byte for byte), however the machine schedules the
   roles; the report agrees with the ledger it wrote; the PNGs and the HTML page are there and say the same.
2. On a hand-made recording, the paper trader fills at the first book at or after decision time + latency, in the
   recording's time: the fill prices are those of that book, not of the book the signal saw.
3. Bad input: a model file whose name names no strategy kind, a missing recording: one line, exit 2.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bot.backtest.run import prepare_out, run_chain
from bot.config import DEMO_CONFIG_PATH, load_config
from bot.events import BookEvent
from bot.recording import RecordingWriter
from bot.sim.scenarios import scenario_config
from bot.simulate import simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(tmp_path: Path, fee_bps: float, **top: Any) -> Path:
    """config/demo.yaml with every venue's taker fee set to `fee_bps` (more signals in a short recording)."""
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    for venue in data["venues"].values():
        venue["taker_fee_bps"] = fee_bps
    if model_dir := data.get("scorer", {}).get("model_dir"):
        data["scorer"]["model_dir"] = str((DEMO_CONFIG_PATH.parent / model_dir).resolve())
    data.update(top)
    path = tmp_path / "backtest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _backtest(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "backtest", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_two_runs_write_the_same_report_and_it_agrees_with_the_ledger(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    recording = tmp_path / "lead_lag.jsonl.gz"
    simulate(scenario_config("lead_lag", 3), 90.0, recording)
    config = _config(tmp_path, fee_bps=2.0)
    runs = []
    for name in ("first", "second"):
        code, out, err = await _backtest(
            subprocess_env, "--data", str(recording), "--out", str(tmp_path / name), "-c", str(config)
        )
        assert code == 0, err
        assert "wrote" in out
        runs.append(tmp_path / name)
    first, second = ((run / "report.json").read_bytes() for run in runs)
    assert first == second
    report = orjson.loads(first)
    assert report["risk"]["executed"] >= 3, "the recording should give several trades to compare"
    assert report["backtest"]["signals"] >= report["risk"]["decided"]
    with sqlite3.connect(runs[0] / "ledger.sqlite") as db:
        decisions = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        executed = db.execute("SELECT COUNT(*) FROM decisions WHERE action = 'execute'").fetchone()[0]
    assert decisions == report["fills"]["decisions"] == report["risk"]["decided"]
    assert executed == report["fills"]["executed"] == report["risk"]["executed"]
    curve = report["pnl"]["curve"]
    assert curve and curve[-1][1] == pytest.approx(report["pnl"]["total"])
    assert all(report["backtest"]["first_ts"] <= ts <= report["backtest"]["last_ts"] + 60_000 for ts, _ in curve)
    for image in ("pnl.png", "summary.png"):
        assert (runs[0] / image).read_bytes().startswith(PNG_MAGIC)
    page = (runs[0] / "report.html").read_text()
    assert f"{report['pnl']['total']:,.2f}" in page
    assert 'src="pnl.png"' in page


def _book(venue: str, ts: int, bid: float, ask: float, size: float = 10.0) -> BookEvent:
    bids = ((bid, size), (bid - 1.0, 10.0))
    asks = ((ask, size), (ask + 1.0, 10.0))
    return BookEvent.from_levels(venue, "ETH/USDT", ts, bids, asks, ts)


def write_events(path: Path, events: list[BookEvent]) -> None:
    with RecordingWriter(path) as writer:
        for event in events:
            writer.write(event)


async def test_the_paper_trader_fills_at_the_book_of_decision_time_plus_latency(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARBBOT_REDIS_URL", redis_url)
    # No deadline: this test is about which books fill, not about the window (the rule scorer, no model).
    paper = {"default_latency_ms": 100, "respect_deadline": False}
    config_path = _config(tmp_path, fee_bps=0.0, paper=paper, scorer={})
    config = load_config(config_path)
    venues = list(config.venues)[:2]
    a, b = venues
    t0 = 1_763_700_000_000
    events = [_book(a, t0 + i, 3000.0, 3000.5) for i in range(0, 50, 10)]
    events += [_book(b, t0 + i, 3000.0, 3000.5) for i in range(5, 50, 10)]
    # At t0+60 b's bid jumps above a's ask: buy on a, sell on b. The decision is taken at t0+60; the books at
    # t0+160 (latency 100 ms) are what the paper trader must fill against.
    events.append(_book(b, t0 + 60, 3010.0, 3010.5))
    events.append(_book(a, t0 + 120, 3001.0, 3001.5))  # before decision time + latency: not the fill book
    events.append(_book(a, t0 + 170, 3004.0, 3004.5))  # first a book at or after t0+160
    events.append(_book(b, t0 + 175, 3008.0, 3008.5))  # first b book at or after t0+160
    events += [_book(a, t0 + 1_000 + i, 3004.0, 3004.5) for i in range(0, 40, 10)]
    events += [_book(b, t0 + 1_005 + i, 3004.0, 3004.5) for i in range(0, 40, 10)]
    recording = tmp_path / "gap.jsonl"
    write_events(recording, sorted(events, key=lambda event: event.ts))
    out = tmp_path / "out"
    model_dir = prepare_out(out, None)
    run = await run_chain(config, [recording], out, model_dir)
    assert run.chain.risk.engine.stats.executed == 1
    with sqlite3.connect(run.ledger_path) as db:
        legs = db.execute("SELECT venue, side, price FROM legs WHERE role = 'trade' ORDER BY side").fetchall()
    assert legs == [(a, "buy", pytest.approx(3004.5)), (b, "sell", pytest.approx(3008.0))]


def test_bad_model_and_missing_recording_are_one_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    recording = tmp_path / "r.jsonl"
    write_events(recording, [_book("okx", 1, 3000.0, 3000.5)])
    wrong = tmp_path / "my_model.npz"
    wrong.write_bytes(b"not a model")
    for args, says in (
        (["--data", str(recording), "--out", str(tmp_path / "o"), "--model", str(wrong)], "name a model file"),
        (["--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")], "no such recording"),
    ):
        code, _out, err = asyncio.run(_backtest(subprocess_env, *args))
        assert code == 2
        assert says in err
        assert len(err.strip().splitlines()) == 1, err
