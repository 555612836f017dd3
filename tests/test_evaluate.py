"""`arbbot train` and `arbbot evaluate` end to end on a short simulation, and their one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from test_train import FAST, synthetic

from bot.config import DEMO_CONFIG_PATH, load_config
from bot.model.dataset import build_dataset
from bot.model.evaluate import check_goals
from bot.model.file import load_model
from bot.model.labels import LabelSettings
from bot.model.runs import build_runs_dataset, group_runs
from bot.model.train import train_model, write_model
from bot.simulate import simulate

REQUIRED = ("roc_auc", "pr_auc", "brier", "trades", "losing_trades", "hit_rate", "pnl")


def _arbbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "sim.jsonl.gz"
    simulate(load_config(DEMO_CONFIG_PATH), 100.0, path)
    return path


def test_train_then_evaluate_write_a_model_and_every_key(
    recording: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    model = tmp_path / "model.npz"
    trained = _arbbot(
        "train", "--data", str(recording), "--out", str(model), "--range", "0:0.7", "--epochs", "2",
        "--window", "8", "--hidden", "8", "--latency-ms", "200", env=subprocess_env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    loaded = load_model(model)
    meta = loaded.meta
    assert meta["window"] == 8 and meta["architecture"]["hidden"] == 8
    assert meta["label"]["latency_ms"] == 200
    assert meta["label"]["fee_bps"] == {"alpha": 2.0, "beta": 2.5, "gamma": 3.0}  # the config's venues
    assert {"logistic.coef", "logistic.intercept"} <= set(loaded.baselines)
    assert meta["normalisation"]["mean"] and len(meta["features"]) == loaded.lstm.input_size

    report_path, plot = tmp_path / "eval.json", tmp_path / "eval.png"
    evaluated = _arbbot(
        "evaluate", "--model", str(model), "--data", str(recording), "--range", "0.7:1",
        "--json", str(report_path), "--plot", str(plot), env=subprocess_env,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = orjson.loads(report_path.read_bytes())
    for scorer in ("lstm", "logistic", "naive", "rule"):
        assert set(REQUIRED) <= set(report[scorer]), scorer
        assert report[scorer]["trades"] >= report[scorer]["losing_trades"] >= 0
    assert {"lifetime_mae_ms", "edge_mae_bps"} <= set(report["lstm"])
    assert report["naive"]["trades"] == report["data"]["opportunities"]  # naive acts on every one, once
    assert isinstance(report["goals"]["all_met"], bool)
    assert report["data"]["label"]["latency_ms"] == 200  # the model's label settings unless told otherwise
    forecast = report["spread_forecast"]  # the spread-path intervals' held-out coverage beside their nominal level
    assert forecast["nominal"] == 0.9
    assert len(forecast["coverage_by_step"]) == 7  # a window of 8 updates shows 7 steps ahead
    assert 0.0 <= forecast["coverage"] <= 1.0 and forecast["points"] > 0
    assert "auc_spread_lstm_minus_logistic" in report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    zero = tmp_path / "zero.json"
    again = _arbbot(
        "evaluate", "--model", str(model), "--data", str(recording), "--range", "0.7:1", "--fee-bps", "0",
        "--json", str(zero), env=subprocess_env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    zero_report = orjson.loads(zero.read_bytes())
    assert zero_report["data"]["label"]["default_fee_bps"] == 0.0
    assert zero_report["data"]["positive_rate"] >= report["data"]["positive_rate"]


def test_evaluate_refuses_a_model_with_other_features(
    recording: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    model = tmp_path / "other.npz"
    write_model(train_model(synthetic(n=600), FAST), model)  # features f0..f3, not the code's
    result = _arbbot(
        "evaluate", "--model", str(model), "--data", str(recording), "--json", str(tmp_path / "x.json"),
        env=subprocess_env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "features differ" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--out", "m.npz", "--data"], "requires an argument"),
        (["train", "--out", "m.npz", "--data", "missing.jsonl.gz"], "no such recording"),
        (["train", "--out", "m.npz", "--data", "REC", "--range", "0.7:0.2"], "bad range '0.7:0.2'"),
        # garbage.npz is a file, so no folder can be made under it: said before any training.
        (["train", "--out", "garbage.npz/m.npz", "--data", "REC"], "cannot create its folder"),
        (["evaluate", "--model", "garbage.npz", "--data", "REC", "--json", "x.json"], "not a readable model file"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str], message: str, recording: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    (tmp_path / "garbage.npz").write_bytes(np.arange(5).tobytes())
    full = [str(recording) if a == "REC" else str(tmp_path / a) if a.endswith((".npz", ".json")) else a for a in args]
    result = _arbbot(*full, env=subprocess_env)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_separate_runs_are_not_merged(recording: Path, tmp_path: Path) -> None:
    config = load_config(DEMO_CONFIG_PATH)
    assert config.simulator is not None
    other = tmp_path / "other.jsonl.gz"
    simulate(config.model_copy(update={"simulator": config.simulator.model_copy(update={"seed": 8})}), 30.0, other)
    assert group_runs([recording, other]) == [[recording], [other]]  # same venues: two markets, not one
    settings = LabelSettings(fee_bps={"alpha": 2.0, "beta": 2.5, "gamma": 3.0})
    a = build_dataset([other], config, settings=settings, window=4)
    both = build_runs_dataset([other, other], config, "cex_cex", (0.0, 1.0), settings, 4)
    assert len(both) == 2 * len(a) > 0
    assert len(set(both.opportunity_ids)) == 2 * len(set(a.opportunity_ids))  # run-prefixed, still distinct
    assert np.array_equal(both.windows[len(a) :], a.windows)
    assert np.array_equal(both.profitable[: len(a)], a.profitable)


def _row(auc: float, pnl: float, losing: int) -> dict[str, float | int]:
    return {"roc_auc": auc, "pnl": pnl, "losing_trades": losing}


def test_goals() -> None:
    met = check_goals({"lstm": _row(0.87, 130.0, 5), "logistic": _row(0.81, 90.0, 6), "naive": _row(0.5, 100.0, 9)})
    assert met["all_met"]
    short = check_goals({"lstm": _row(0.85, 129.0, 9), "logistic": _row(0.81, 90.0, 6), "naive": _row(0.5, 100.0, 9)})
    assert not any(
        short[name]["met"] for name in ("lstm_auc_vs_logistic", "lstm_pnl_vs_naive", "lstm_fewer_losing_trades")
    )
    # A losing naive policy: standing aside (0) meets the PnL goal, losing less than naive does not.
    aside = check_goals({"lstm": _row(0.9, 0.0, 0), "logistic": _row(0.8, 0.0, 0), "naive": _row(0.5, -50.0, 9)})
    assert aside["lstm_pnl_vs_naive"]["met"]
    losing = check_goals({"lstm": _row(0.9, -10.0, 1), "logistic": _row(0.8, 0.0, 0), "naive": _row(0.5, -50.0, 9)})
    assert not losing["lstm_pnl_vs_naive"]["met"]
