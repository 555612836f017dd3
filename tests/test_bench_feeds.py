"""The feeds benchmark: the shape and sanity of its result, and proof that ccxt parsed real, complete frames."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.bench.feeds import PROTOCOLS, SCALING_POINTS, WIRE_LEVELS, ProtocolEvidence, format_table, run_feeds_bench

Run = tuple[dict[str, Any], dict[str, ProtocolEvidence]]

PROTOCOL_KEYS = {
    "frames",
    "changes_per_frame",
    "repeats",
    "ccxt_per_s",
    "pipeline_per_s",
    "ratio",
    "ccxt_us_per_frame",
    "pipeline_us_per_update",
    "arbbot_us_per_update",
}
SCALING_KEYS = {"venues", "symbols", "updates", "evaluations_per_update", "us_per_update", "updates_per_s_capacity"}


@pytest.fixture(scope="module")
def run() -> Run:
    evidence: dict[str, ProtocolEvidence] = {}
    result = run_feeds_bench(quick=True, evidence=evidence)
    return result, evidence


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_protocol_rates_are_positive_and_the_ratio_is_theirs(run: Run) -> None:
    result, _ = run
    assert set(result["protocols"]) == set(PROTOCOLS)
    for row in result["protocols"].values():
        assert set(row) == PROTOCOL_KEYS
        for key in PROTOCOL_KEYS - {"arbbot_us_per_update"}:
            assert _positive(row[key]), key
        assert 0 < row["ratio"] <= 1.5
        assert row["ratio"] == pytest.approx(row["pipeline_per_s"] / row["ccxt_per_s"], rel=1e-3)
        assert row["pipeline_us_per_update"] == pytest.approx(1e6 / row["pipeline_per_s"], rel=1e-3)


def test_scaling_has_every_point_in_order(run: Run) -> None:
    result, _ = run
    assert [(row["venues"], row["symbols"]) for row in result["scaling"]] == list(SCALING_POINTS)
    for row in result["scaling"]:
        assert set(row) == SCALING_KEYS
        assert _positive(row["us_per_update"])
        assert row["updates_per_s_capacity"] == pytest.approx(1e6 / row["us_per_update"], rel=1e-3)
        assert row["evaluations_per_update"] == 2 * (row["venues"] - 1)
        assert row["updates"] > 0


def test_one_process_estimate_adds_its_parts(run: Run) -> None:
    one = run[0]["one_process_3x20"]
    assert (one["venues"], one["symbols"]) == (3, 20)
    assert one["us_per_update"] == pytest.approx(one["feed_us_per_update"] + one["engine_us_per_update"], abs=0.02)
    assert one["updates_per_s_per_book"] == pytest.approx(one["updates_per_s"] / 60, rel=1e-3)


def test_machine_and_time_are_recorded(run: Run) -> None:
    result, _ = run
    machine = result["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert machine["python"] == platform.python_version()
    assert machine["ccxt"] == importlib.metadata.version("ccxt")
    measured_at = datetime.fromisoformat(result["measured_at"])
    assert measured_at.utcoffset() == UTC.utcoffset(None)
    assert result["quick"] is True


def test_result_is_json_ready(run: Run) -> None:
    result, _ = run
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_ccxt_ends_with_exactly_the_server_book(run: Run) -> None:
    """Both the reference and the pipeline passes leave ccxt with the book the server made current last."""
    _, evidence = run
    assert set(evidence) == set(PROTOCOLS)
    for protocol, proof in evidence.items():
        update_id, bids, asks = proof.server_book
        assert len(bids) == len(asks) == WIRE_LEVELS, protocol
        for book in (proof.ccxt_book, proof.pipeline_book):
            assert book.bids == bids, protocol
            assert book.asks == asks, protocol
            if protocol != "bybit":  # ccxt's bybit keeps no nonce
                assert book.nonce == update_id, protocol
        # Every update reached ccxt: a frame each, but Binance's first book came as the REST snapshot.
        assert proof.frames == update_id - (1 if protocol == "binance" else 0), protocol


def test_pipeline_applied_every_frame(run: Run) -> None:
    result, evidence = run
    for protocol, proof in evidence.items():
        assert proof.engine_updates == proof.frames == result["protocols"][protocol]["frames"]
        assert proof.rejections == 0


def test_table_has_a_row_per_protocol_and_point(run: Run) -> None:
    result, _ = run
    table = format_table(result)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert sum(line.startswith(f"| {protocol} |") for protocol in PROTOCOLS for line in rows) == len(PROTOCOLS)
    for venues, symbols in SCALING_POINTS:
        assert any(line.startswith(f"| {venues} × {symbols} |") for line in rows)
    assert "(quick run)" in table
