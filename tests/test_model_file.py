"""The model file: round trips, PyTorch state dicts in and out, and refusal of files the code cannot use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.model.file import FORMAT_VERSION, ModelFileError, load_model, save_model
from bot.model.heads import Heads
from bot.model.lstm import LSTM

FEATURES = ["net_edge_bps", "spread_bps", "imbalance"]


def _meta(**overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "features": FEATURES,
        "window": 8,
        "normalisation": {"mean": [0.0] * 3, "std": [1.0] * 3},
        "architecture": {"hidden": 4, "layers": 2},
        "label": {"latency_ms": 250, "fees_bps": {"default": 10}},
        "data_fingerprint": "abc123",
        "metrics": {},
        "created": "2026-11-21T00:00:00Z",
    }
    meta.update(overrides)
    return meta


def _model() -> tuple[LSTM, Heads]:
    rng = np.random.default_rng(3)
    return LSTM.init(3, 4, 2, rng, np.float64), Heads.init(4, rng, np.float64)


def test_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    lstm, heads = _model()
    path = tmp_path / "cex_cex.npz"
    save_model(path, lstm, heads, _meta(), {"logistic.coef": np.arange(3.0)})
    loaded = load_model(path, FEATURES, 8, dtype=np.float64)
    x = np.random.default_rng(4).normal(size=(2, 8, 3))
    np.testing.assert_array_equal(loaded.lstm.forward(x), lstm.forward(x))
    assert loaded.meta["format_version"] == FORMAT_VERSION
    np.testing.assert_array_equal(loaded.baselines["logistic.coef"], np.arange(3.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ["net_edge_bps", "spread_bps"]}, "features differ"),
        ({"features": [*reversed(FEATURES)]}, "features differ"),
        ({"window": 16}, "window"),
    ],
)
def test_a_file_the_code_cannot_use_is_refused(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    lstm, heads = _model()
    path = tmp_path / "m.npz"
    save_model(path, lstm, heads, _meta())
    with pytest.raises(ModelFileError, match=message):
        load_model(path, kwargs.get("features", FEATURES), kwargs.get("window", 8))


def test_another_format_version_and_missing_meta_are_refused(tmp_path: Path) -> None:
    lstm, heads = _model()
    path = tmp_path / "m.npz"
    save_model(path, lstm, heads, _meta())
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = np.array(json.dumps({**_meta(), "format_version": FORMAT_VERSION + 1}))
    np.savez(tmp_path / "future.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(ModelFileError, match="format_version"):
        load_model(tmp_path / "future.npz")
    incomplete = _meta()
    del incomplete["label"]
    with pytest.raises(ModelFileError, match="label"):
        save_model(tmp_path / "x.npz", lstm, heads, incomplete)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(tmp_path / "junk.npz")


def test_export_then_import_torch_through_the_cli(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    lstm, heads = _model()
    model_path = tmp_path / "model.npz"
    save_model(model_path, lstm, heads, _meta())
    state = tmp_path / "state.npz"
    meta_path = tmp_path / "meta.json"
    meta_path.write_text(json.dumps(_meta()))
    run = [sys.executable, "-m", "bot", "model"]
    exported = subprocess.run([*run, "export-torch", str(model_path), "--out", str(state)],
                              env=subprocess_env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    with np.load(state) as data:
        assert set(data.files) == set(lstm.state_dict()) | set(heads.params)
        assert data["weight_ih_l0"].shape == (16, 3) and data["weight_ih_l1"].shape == (16, 4)
    again = tmp_path / "again.npz"
    imported = subprocess.run([*run, "import-torch", str(state), "--meta", str(meta_path), "--out", str(again)],
                              env=subprocess_env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    x = np.random.default_rng(5).normal(size=(1, 8, 3))
    np.testing.assert_allclose(load_model(again, dtype=np.float64).lstm.forward(x), lstm.forward(x), rtol=1e-12)
    bad = subprocess.run([*run, "import-torch", str(state), "--meta", str(tmp_path / "nope.json"), "--out", str(again)],
                         env=subprocess_env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
