"""The fault drills' short forms, run as a user runs them (`arbbot drill NAME --short --json PATH`), and the audit
that judges kill-roles, on streams built to break each of its invariants."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import make_signal

from bot.drills.audit import audit_ledger, audit_streams
from bot.drills.report import DrillReport
from bot.messages import Decision, Fill
from bot.paper.executor import fill_id
from bot.paper.fills import LegResult
from bot.paper.ledger import Execution, Ledger, LegRecord

DRILL_TIMEOUT_S = 240


def _drill(name: str, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "drill", name, "--short", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=DRILL_TIMEOUT_S, check=False,
    )  # fmt: skip
    report: dict[str, Any] = orjson.loads(out.read_bytes()) if out.exists() else {}
    return done, report


def test_venue_drops_short(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    done, report = _drill("venue-drops", tmp_path, subprocess_env)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = report["counts"]
    assert report["ok"] and report["form"] == "short" and not report["failed"]
    assert counts["faults_fired"] == 10
    assert set(counts["faults_injected"]) == {"drop", "reset", "stall"}
    assert all(n > 0 for n in counts["reconnects_by_venue"].values()) and len(counts["reconnects_by_venue"]) == 3
    assert counts["stale_intervals"] > 0
    assert counts["signals"] > 0
    assert counts["signals_from_stale_books"] == 0 and counts["signals_from_unusable_books_audit"] == 0
    assert counts["crashes"] == 0
    assert "PASS" in done.stdout


def test_redis_restart_short(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    done, report = _drill("redis-restart", tmp_path, subprocess_env)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = report["counts"]
    assert counts["stops"] == ["SIGKILL"] and counts["redis_starts"] == 2
    assert counts["submitted"] > 0 and counts["accepted"] + counts["publisher_dropped"] == counts["submitted"]
    assert counts["publisher_redis_errors"] > 0  # Redis really went away under the publisher
    assert counts["lost"] == 0 and counts["lost_in_stream"] == 0 and counts["duplicates"] == 0
    assert counts["received"] == counts["accepted"]
    assert counts["redelivered_dropped_by_id"] == 0  # the stream subscriber went on after its last entry
    assert all(n > 0 for n in counts["pubsub_after_each_restart"])
    assert 0 < counts["queue_high_water"] <= counts["queue_bound"]
    # The publisher probes Redis while it backs off: it writes again soon after Redis answers, not seconds later.
    resumed_after_s = [outage["publisher_resumed_after_s"] for outage in counts["outages"]]
    assert resumed_after_s and all(s is not None and s <= 1.0 for s in resumed_after_s), resumed_after_s
    assert counts["crashes"] == 0


def test_malformed_flood_short(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    done, report = _drill("malformed-flood", tmp_path, subprocess_env)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = report["counts"]
    assert {"malformed", "crossed", "nan"} <= set(counts["venue_faults_injected"])
    assert counts["feed_rejections"].get("invalid_book", 0) > 0
    readers = {key.split("/")[0] for key in counts["rejections"]}
    assert readers == {"risk", "risk-market", "paper", "paper-market", "subscriber"}
    assert all(v["sent"] > 0 and v["counted"] == v["sent"] for v in counts["rejections"].values())
    assert counts["decisions_after_venues_calm"] > 0
    assert counts["signals_from_stale_books"] == 0 and counts["signals_from_unusable_books_audit"] == 0
    assert counts["risk_state"] == "ACTIVE" and counts["paper_consumer_running"]
    assert counts["crashes"] == 0


@pytest.fixture(scope="module")
def kill_roles(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The kill-roles short form, run once for the tests below (the drill uses a private Redis of its own)."""
    tests = Path(__file__).resolve().parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tests / "netguard"), str(tests.parent), env.get("PYTHONPATH")) if p
    )
    return _drill("kill-roles", tmp_path_factory.mktemp("kill-roles"), env)


def test_kill_roles_short(kill_roles: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    """Every invariant holds after a SIGKILL of each role and its restart."""
    done, report = kill_roles
    counts = report["counts"]
    assert report["failed"] == [], done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts["kills"] == {"signals": 1, "risk": 1, "paper": 1}
    assert counts["restarts"] == {"signals": 1, "risk": 1, "paper": 1}
    assert counts["exit_codes"] == {"signals": 0, "risk": 0, "paper": 0}
    assert counts["crashes"] == 0
    assert counts["decisions"] > 0 and counts["fills_unique"] > 0
    assert counts["lost"] == 0 and counts["phantom"] == 0 and counts["duplicates"] == 0
    assert counts["ledger_decisions"] == counts["decisions"]
    assert counts["balance_gap_vs_legs"] <= 1e-6 and counts["balance_gap_vs_fills"] <= 1e-6
    assert counts["undecided_episodes"] == 0 and counts["decisions_lost_in_risk_kills"] == 0
    assert report["ok"]


def test_unknown_drill_is_one_line(subprocess_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "drill", "nope", "--short"],
        env=subprocess_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "arbbot: unknown drill 'nope' (known: venue-drops, redis-restart, malformed-flood, kill-roles)"
    ]


def test_a_failed_check_fails_the_report() -> None:
    report = DrillReport("x", "short", say=lambda _line: None)
    report.check("holds", True, "")
    assert report.ok
    report.check("breaks", False, "2 lost")
    assert not report.ok and [c.name for c in report.failed] == ["breaks"]
    assert report.summary_lines()[-1] == "FAIL: breaks"
    assert not DrillReport("y", "short").ok  # a drill that checked nothing has not passed


def _decision(signal_id: str, opportunity_id: str, action: str = "execute") -> Decision:
    return Decision.model_validate(
        {
            "ts": 1, "signal_id": signal_id, "opportunity_id": opportunity_id, "action": action, "reasons": [],
            "size": 0.1 if action == "execute" else 0.0, "slippage_bps": {"buy": 0.0, "sell": 0.0},
            "expected_pnl": 0.0, "window": {"not_before_ts": 1, "deadline_ts": 2}, "gas": None,
            "risk_state": "ACTIVE", "symbol": "BTC/USDT",
        }
    )  # fmt: skip


def _fill(decision_id: str, price: float, fid: str | None = None) -> Fill:
    return Fill.model_validate(
        {
            "id": fid or fill_id(decision_id), "ts": 1, "decision_id": decision_id, "realised_pnl": 0.0,
            "status": "filled", "symbol": "BTC/USDT",
            "legs": [{"venue": "alpha", "side": "buy", "price": price, "size": 0.1, "fee": 0.0}],
        }
    )  # fmt: skip


def test_audit_counts_each_broken_invariant() -> None:
    opened = make_signal(opportunity_id="a", status="open")
    updated = make_signal(opportunity_id="a", status="update")
    closed = make_signal(opportunity_id="a", status="closed", size=0.0)
    reopened = make_signal(opportunity_id="a", status="open")
    other = make_signal(opportunity_id="b", status="open")
    first, again = _decision(opened.id, "a"), _decision(updated.id, "a")  # one episode decided twice
    second = _decision(reopened.id, "a")  # a reopened gap may be decided again
    fills = [_fill(first.id, 100.0), _fill(first.id, 100.0), _fill(second.id, 100.0), _fill(second.id, 101.0)]
    audit = audit_streams([opened, updated, closed, reopened, other], [first, again, second], fills)
    assert audit.episodes == 3
    assert audit.episodes_decided_twice == 1
    assert audit.signals_decided_twice == 0
    assert audit.undecided_episodes == 1  # b
    assert audit.fills_republished == 2 and audit.fills_conflicting == 1
    assert audit.fills_unique == 2


def _execution(decision_id: str) -> Execution:
    legs = (
        LegRecord(LegResult("alpha", "buy", 0.1, 0.1, 10_000.0, 2.0, 0.0, "filled", 1), "alpha", "BTC", "USDT"),
        LegRecord(LegResult("beta", "sell", 0.1, 0.1, 10_010.0, 2.5, 0.0, "filled", 1), "beta", "BTC", "USDT"),
    )
    return Execution(decision_id, 1, "execute", "filled", 5.5, legs, "BTC/USDT")


def _fills_of(decision_id: str) -> list[Fill]:
    return [
        Fill.model_validate(
            {
                "id": fill_id(decision_id), "ts": 1, "decision_id": decision_id, "realised_pnl": 5.5,
                "status": "filled", "symbol": "BTC/USDT",
                "legs": [
                    {"venue": "alpha", "side": "buy", "price": 100_000.0, "size": 0.1, "fee": 2.0},
                    {"venue": "beta", "side": "sell", "price": 100_100.0, "size": 0.1, "fee": 2.5},
                ],
            }
        )
    ]  # fmt: skip


def test_ledger_audit_holds_on_a_true_ledger_and_sees_a_side_applied_twice(tmp_path: Path) -> None:
    signal = make_signal(opportunity_id="a", status="open")
    decision = _decision(signal.id, "a")
    start = {"alpha": {"BTC": 1.0, "USDT": 100_000.0}, "beta": {"BTC": 1.0, "USDT": 100_000.0}}
    path = tmp_path / "ledger.sqlite"
    with Ledger(path, start) as ledger:
        assert ledger.record(_execution(decision.id))
    streams = audit_streams([signal], [decision], _fills_of(decision.id))
    clean = audit_ledger(path, streams)
    assert (clean.lost, clean.phantom, clean.decisions_filled_twice) == (0, 0, 0)
    assert clean.balances_vs_legs <= 1e-12 and clean.balances_vs_fills <= 1e-12
    assert clean.legs == 2

    missing = audit_ledger(path, audit_streams([signal], [decision, _decision(signal.id, "a")], []))
    assert missing.lost == 1  # a decision in the stream that the ledger never recorded
    assert missing.balances_vs_fills > 1e-6  # no fills published: the ledger's balances moved without them

    with sqlite3.connect(path) as db:  # the buy leg applied a second time, balances and all
        db.execute(
            "INSERT INTO legs (decision_id, role, venue, account, side, base, quote, requested, size, price, notional,"
            " fee, gas_native, status, market_ts) SELECT decision_id, role, venue, account, side, base, quote,"
            " requested, size, price, notional, fee, gas_native, status, market_ts FROM legs WHERE side = 'buy'"
        )
        db.execute("UPDATE balances SET amount = amount + 0.1 WHERE account = 'alpha' AND asset = 'BTC'")
        db.execute("UPDATE balances SET amount = amount - 10002.0 WHERE account = 'alpha' AND asset = 'USDT'")
    doubled = audit_ledger(path, streams)
    assert doubled.decisions_filled_twice == 1
    assert doubled.balances_vs_legs <= 1e-12  # consistent with its own legs …
    assert doubled.balances_vs_fills > 1e-6  # … but not with what was published
