"""`arbbot paper report`: the JSON agrees with the ledger, the PNG is written, config errors are one line."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
import redis
import yaml

from bot.paper.fills import walk_book
from bot.paper.ledger import Execution, Ledger, LegRecord, OpenPosition
from bot.paper.report import build_report

TS = 1_763_700_000_000
START = {"alpha": {"BTC": 1.0, "USDT": 10_000.0}, "beta": {"BTC": 1.0, "USDT": 10_000.0}}


def _trade(decision_id: str, ts: int, buy_at: float, sell_at: float, sell_depth: float = 1.0) -> Execution:
    buy = walk_book("alpha", "buy", ((buy_at, 1.0),), 0.5, 0.001, ts)
    sell = walk_book("beta", "sell", ((sell_at, sell_depth),), 0.5, 0.001, ts)
    legs = (
        LegRecord(buy, "alpha", "BTC", "USDT", None, buy_at - 0.1, 2.0),
        LegRecord(sell, "beta", "BTC", "USDT", None, sell_at + 0.2, 3.0),
    )
    matched = min(buy.size, sell.size)
    pnl = matched * (sell.price - buy.price) - buy.fee - sell.fee
    position = None
    if sell.size < buy.size:
        position = OpenPosition(decision_id, "alpha", "alpha", "BTC/USDT", buy.size - sell.size, buy_at, None, ts)
    status = "filled" if position is None else "partial"
    return Execution(decision_id, ts, "execute", status, pnl, legs, "BTC/USDT", 0.5, position=position)


def _fill_ledger(path: Path) -> None:
    ledger = Ledger(path, START)
    ledger.record(_trade("d1", TS, 100.0, 101.0))
    ledger.record(_trade("d2", TS + 1_000, 100.0, 99.0))
    ledger.record(_trade("d3", TS + 2_000, 100.0, 102.0, sell_depth=0.2))
    ledger.record(Execution("d4", TS + 3_000, "skip", "skipped", 0.0, (), "BTC/USDT", 0.0, detail="risk halted"))
    ledger.record_rejection("9-0", "malformed_json")
    ledger.close()


def test_the_report_agrees_with_the_ledger(tmp_path: Path) -> None:
    _fill_ledger(tmp_path / "l.sqlite")
    ledger = Ledger(tmp_path / "l.sqlite")
    report = build_report(ledger)
    pnls = [row.realised_pnl for row in ledger.decisions() if row.action == "execute"]
    assert report["pnl"]["total"] == pytest.approx(sum(pnls))
    assert [point[1] for point in report["pnl"]["curve"]] == pytest.approx([pnls[0], pnls[0] + pnls[1], sum(pnls)])
    assert report["fills"]["by_status"] == {"filled": 2, "partial": 1, "skipped": 1}
    assert (report["fills"]["decisions"], report["fills"]["executed"], report["fills"]["legs"]) == (4, 3, 6)
    assert report["hit_rate"] == pytest.approx(2 / 3)  # d1 and d3 made money, d2 lost
    assert report["balances"]["now"] == ledger.balances()
    assert report["balances"]["change"]["alpha"]["BTC"] == pytest.approx(1.5)
    assert report["balances"]["change"]["beta"]["BTC"] == pytest.approx(-1.2)
    assert report["slippage"]["buy"]["predicted_bps_mean"] == 2.0
    assert report["slippage"]["buy"]["realised_bps_mean"] == pytest.approx(0.1 / 99.9 * 1e4)
    assert report["slippage"]["sell"]["legs"] == 3
    [open_position] = report["open_inventory"]
    assert (open_position["decision_id"], open_position["quantity"]) == ("d3", pytest.approx(0.3))
    assert report["rejections"] == {"malformed_json": 1}
    ledger.close()


def _config(tmp_path: Path, **paper: object) -> Path:
    config = {
        "symbols": ["BTC/USDT"],
        "venues": {
            "alpha": {"exchange": "okx", "taker_fee_bps": 10},
            "beta": {"exchange": "bybit", "taker_fee_bps": 10},
        },
        "paper": {"ledger_path": str(tmp_path / "l.sqlite"), **paper},
    }
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _arbbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_arbbot_paper_report_writes_json_and_png(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    _fill_ledger(tmp_path / "l.sqlite")
    config = _config(tmp_path)
    out, png = tmp_path / "out" / "report.json", tmp_path / "out" / "report.png"
    result = _arbbot("paper", "report", "-c", str(config), "--json", str(out), "--plot", str(png), env=subprocess_env)
    assert result.returncode == 0, result.stderr
    assert "3 executed of 4 decisions" in result.stdout
    written = orjson.loads(out.read_bytes())
    with Ledger(tmp_path / "l.sqlite") as ledger:
        assert written == orjson.loads(orjson.dumps(build_report(ledger)))
    assert {"pnl", "fills", "balances", "hit_rate"} <= set(written)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_errors_are_one_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    missing = _arbbot("paper", "report", "-c", str(_config(tmp_path)), env=subprocess_env)
    assert missing.returncode == 2
    assert missing.stderr.startswith("arbbot: no paper ledger at") and missing.stderr.count("\n") == 1
    bad = _arbbot("paper", "-c", str(_config(tmp_path, unwind="sometimes")), env=subprocess_env)
    assert bad.returncode == 2 and "paper.unwind" in bad.stderr and "Traceback" not in bad.stderr
    down = _arbbot(
        "paper", "-c", str(_config(tmp_path)), env={**subprocess_env, "ARBBOT_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert down.returncode == 2
    assert down.stderr.startswith("arbbot: cannot reach Redis at redis://127.0.0.1:1/0")
    assert "Traceback" not in down.stderr


def test_a_decision_stream_key_of_another_type_is_one_line_not_a_hang(
    tmp_path: Path, subprocess_env: dict[str, str], redis_url: str
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}:stream:decision", "not a stream")
    try:
        result = _arbbot("paper", "-c", str(_config(tmp_path)), env={**subprocess_env, "ARBBOT_REDIS_PREFIX": prefix})
    finally:
        client.delete(f"{prefix}:stream:decision")
        client.close()
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("arbbot: cannot create consumer group") and "WRONGTYPE" in result.stderr
    assert "Traceback" not in result.stderr
