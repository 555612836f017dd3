"""The model benchmark through the CLI: every reported key is there and positive (no timing thresholds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.bench.model import GOALS, LAYER_COUNTS, format_summary, run_model_bench
from bot.cli import app


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _check_figures(figures: dict[str, Any]) -> None:
    assert _positive(figures["forward_ms"]["b1"])
    assert _positive(figures["forward_ms"]["b64"])
    assert _positive(figures["train_samples_per_s"])


def test_cli_writes_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def small_run(repeat: int) -> dict[str, Any]:
        calls.append({"repeat": repeat})
        return run_model_bench(repeat=repeat, calls_scale=0.02, torch=False)

    monkeypatch.setattr("bot.bench.model.run_model_bench", small_run)
    path = tmp_path / "out" / "model.json"
    result = CliRunner().invoke(app, ["bench", "model", "--json", str(path), "--repeat", "1"])
    assert result.exit_code == 0, result.output
    assert calls == [{"repeat": 1}]
    data = json.loads(path.read_text())
    _check_figures(data)
    assert data["machine"]["threads"] == dict.fromkeys(
        ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"], "1"
    )
    assert set(data["layers"]) == {str(n) for n in LAYER_COUNTS}
    for row in data["layers"].values():
        _check_figures(row["numpy"])
    assert set(data["goals"]) == set(GOALS)
    for key in ("forward_ms.b1", "forward_ms.b64", "train_samples_per_s"):
        assert data["goals"][key]["value"] > 0
        assert isinstance(data["goals"][key]["met"], bool)
    assert "torch_ratio" not in data  # torch was not asked for
    assert data["goals"]["torch_ratio.b64"]["met"] is None


def test_torch_ratios_when_torch_is_installed() -> None:
    pytest.importorskip("torch")
    data = run_model_bench(repeat=1, calls_scale=0.02)
    for key in ("b1", "b64", "train"):
        assert _positive(data["torch_ratio"][key])
    _check_figures(data["torch"])
    for row in data["layers"].values():
        assert row["max_abs_diff_b64"] < 1e-5  # both sides ran the same weights
    assert all(isinstance(goal["met"], bool) for goal in data["goals"].values())


def test_kernels_forced_by_the_environment_are_reported_with_a_run_on_the_detected_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")  # OpenBLAS's generic x86-64 kernels: any x86-64 runs them
    data = run_model_bench(repeat=1, calls_scale=0.02, torch=False)
    assert data["machine"]["openblas_coretype"] == "Prescott"
    detected = data["detected_kernels"]
    assert detected["openblas_core"] not in (None, "")
    assert detected["openblas_core"] != data["machine"]["openblas_core"]  # the second run dropped the variable
    _check_figures(detected)
    assert set(detected["goals"]) == set(GOALS)
    summary = format_summary(data)
    assert "OPENBLAS_CORETYPE=Prescott" in summary
    assert f"With the kernels OpenBLAS picks for this CPU ({detected['openblas_core']}" in summary


def test_no_second_run_when_the_environment_leaves_the_kernels_to_openblas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    data = run_model_bench(repeat=1, calls_scale=0.02, torch=False)
    assert data["machine"]["openblas_coretype"] is None
    assert "detected_kernels" not in data
    assert "With the kernels" not in format_summary(data)
