"""The SQLite ledger: one decision once, balances = starting + legs, open inventory and its unwind, on disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.paper.fills import LegResult, walk_book
from bot.paper.ledger import Execution, Ledger, LegRecord, OpenPosition

TS = 1_763_700_000_000
START = {"alpha": {"BTC": 1.0, "USDT": 100_000.0}, "beta": {"BTC": 1.0, "USDT": 100_000.0}}


def _execution(decision_id: str = "d1", sell_size: float = 0.5) -> Execution:
    buy = walk_book("alpha", "buy", ((100.0, 1.0),), 0.5, 0.001, TS)
    sell = walk_book("beta", "sell", ((101.0, sell_size),), 0.5, 0.002, TS) if sell_size else None
    legs = [LegRecord(buy, "alpha", "BTC", "USDT", reference_price=100.0, predicted_slippage_bps=1.0)]
    if sell is not None:
        legs.append(LegRecord(sell, "beta", "BTC", "USDT", reference_price=101.0, predicted_slippage_bps=2.0))
    position = None
    if sell_size < 0.5:
        position = OpenPosition(decision_id, "alpha", "alpha", "BTC/USDT", 0.5 - sell_size, 100.0, None, TS)
    return Execution(decision_id, TS, "execute", "filled", 0.3, tuple(legs), "BTC/USDT", 0.4, position=position)


def test_a_decision_is_written_once_and_balances_are_starting_plus_legs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", START)
    assert ledger.record(_execution())
    assert not ledger.record(_execution())
    assert ledger.has("d1") and not ledger.has("d2")
    balances = ledger.balances()
    assert balances["alpha"]["BTC"] == pytest.approx(1.5)
    assert balances["alpha"]["USDT"] == pytest.approx(100_000.0 - 50.0 - 0.05)
    assert balances["beta"]["BTC"] == pytest.approx(0.5)
    assert balances["beta"]["USDT"] == pytest.approx(100_000.0 + 50.5 - 0.101)
    assert len(ledger.legs()) == 2
    assert [row.decision_id for row in ledger.decisions()] == ["d1"]


def test_gas_is_paid_in_the_native_asset_of_the_account(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", {"ethereum": {"ETH": 2.0, "USDT": 10_000.0}})
    reverted = LegResult("uniswap_v2:0x" + "ab" * 20, "buy", 1.0, 0.0, 0.0, 0.0, 0.004, "reverted", TS, "tolerance")
    record = LegRecord(reverted, "ethereum", "ETH", "USDT", native="ETH")
    assert ledger.record(Execution("d1", TS, "execute", "reverted", -8.0, (record,), "ETH/USDT"))
    assert ledger.balances()["ethereum"] == pytest.approx({"ETH": 2.0 - 0.004, "USDT": 10_000.0})


def test_starting_balances_are_seeded_once_and_new_ones_added(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path, START)
    ledger.record(_execution())
    ledger.close()
    reopened = Ledger(path, {"alpha": {"BTC": 99.0, "ETH": 3.0}})
    assert reopened.starting_balances()["alpha"] == {"BTC": 1.0, "ETH": 3.0, "USDT": 100_000.0}
    assert reopened.balances()["alpha"]["BTC"] == pytest.approx(1.5)
    assert reopened.balances()["alpha"]["ETH"] == 3.0
    assert reopened.has("d1")


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.sqlite", START).close()
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_lone_leg_shows_as_open_inventory_until_unwound(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", START)
    ledger.record(_execution(sell_size=0.0))
    [position] = ledger.open_positions()
    assert (position.account, position.quantity, position.entry_price) == ("alpha", 0.5, 100.0)
    part = walk_book("alpha", "sell", ((100.5, 0.2),), 0.5, 0.001, TS + 1000)
    leg = LegRecord(part, "alpha", "BTC", "USDT")
    assert ledger.unwind(position, (leg,), 0.2 * 0.5 - part.fee, 0.3, TS + 1000)
    # The caller's view is stale now: a second unwind of the same quantity writes nothing.
    assert not ledger.unwind(position, (leg,), 0.1, 0.3, TS + 1000)
    [still_open] = ledger.open_positions()
    assert still_open.quantity == pytest.approx(0.3)
    assert ledger.balances()["alpha"]["BTC"] == pytest.approx(1.5 - 0.2)
    rest = walk_book("alpha", "sell", ((100.0, 1.0),), 0.3, 0.001, TS + 2000)
    assert ledger.unwind(still_open, (LegRecord(rest, "alpha", "BTC", "USDT"),), -rest.fee, 0.0, TS + 2000)
    assert ledger.open_positions() == []
    assert ledger.balances()["alpha"]["BTC"] == pytest.approx(1.0)
    assert [row["status"] for row in ledger.positions()] == ["unwound"]


def test_rejections_are_counted_once_per_entry(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.record_rejection("1-0", "malformed_json")
    assert not ledger.record_rejection("1-0", "malformed_json")
    assert ledger.record_rejection("2-0", "unknown_venue")
    assert ledger.rejections() == {"malformed_json": 1, "unknown_venue": 1}


def test_a_ledger_written_before_positions_named_their_opportunity_opens_and_keeps_its_positions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(  # the positions table as the first ledgers wrote it
        "CREATE TABLE positions (decision_id TEXT PRIMARY KEY, account TEXT NOT NULL, venue TEXT NOT NULL,"
        " symbol TEXT NOT NULL, quantity REAL NOT NULL, entry_price REAL NOT NULL, unwind_venue TEXT,"
        " status TEXT NOT NULL, opened_ts INTEGER NOT NULL, closed_ts INTEGER,"
        " unwind_pnl REAL NOT NULL DEFAULT 0.0)"
    )
    db.execute("INSERT INTO positions VALUES ('d1', 'alpha', 'alpha', 'BTC/USDT', 0.5, 100.0, 'beta', 'open', 7,"
               " NULL, 0.0)")  # fmt: skip
    db.commit()
    db.close()
    ledger = Ledger(path, START)
    assert ledger.open_positions() == [OpenPosition("d1", "alpha", "alpha", "BTC/USDT", 0.5, 100.0, "beta", 7)]
    ledger.close()
