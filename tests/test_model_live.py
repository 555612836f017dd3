"""A model trained by `train_model` scores live: the replayed pipeline's signals carry its name and exactly the
scores `predict` gives for the windows the offline dataset saw at the same moments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.config import DEMO_CONFIG_PATH, RootConfig, load_config
from bot.messages import Signal
from bot.model.dataset import build_dataset
from bot.model.file import load_model
from bot.model.predict import predict
from bot.model.train import TrainSettings, train_model, write_model
from bot.recording import merge_events
from bot.rejections import RejectionCounter
from bot.replay import Replayer
from bot.simulate import simulate


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "sim.jsonl.gz"
    simulate(load_config(DEMO_CONFIG_PATH), 90.0, path)
    return path


def _with_models(config: RootConfig, model_dir: Path) -> RootConfig:
    scorer = config.scorer.model_copy(update={"model_dir": model_dir, "feature_window": 48})
    return config.model_copy(update={"scorer": scorer})


def _replay(config: RootConfig, path: Path) -> list[Signal]:
    signals: list[Signal] = []
    rejections = RejectionCounter()
    replayer = Replayer(config, signals.append, rejections)
    for event in merge_events([path], rejections):
        replayer.feed(event)
    replayer.finish()
    return signals


def test_a_trained_model_scores_the_live_pipeline(recording: Path, tmp_path: Path) -> None:
    config = load_config(DEMO_CONFIG_PATH)
    dataset = build_dataset([recording], config, window=16)
    result = train_model(dataset, TrainSettings(hidden=8, epochs=2, gap_ms=1_000, patience=1))
    models = tmp_path / "models"
    models.mkdir()
    write_model(result, models / "cex_cex.npz")
    model = load_model(models / "cex_cex.npz")

    signals = _replay(_with_models(config, models), recording)
    live = [s for s in signals if s.status == "open" and s.kind == "cex_cex"]

    assert live, "the recording has opportunities"
    assert {s.model for s in live} == {model.meta["model"]}
    # The demo's cex_dex opportunities have no model of their kind: the rules score them and say so.
    assert {s.model for s in signals if s.kind == "cex_dex"} == {"rule"}
    # Opens happen at the same evaluations whatever the scorer, so each live open has its offline twin.
    offline = {
        (int(ts), key): index
        for index, (ts, key, status) in enumerate(zip(dataset.ts, dataset.keys, dataset.status, strict=True))
        if status == "open"
    }
    rows = [offline[(s.ts, (s.kind, s.symbol, s.buy_venue, s.sell_venue))] for s in live]
    expected = predict(model, dataset.windows[rows])
    np.testing.assert_allclose([s.score for s in live], expected["p_profitable"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([s.expected_lifetime_ms for s in live], expected["lifetime_ms"], rtol=1e-4)
    rule_scores = dataset.rule_score[rows]
    assert not np.allclose([s.score for s in live], rule_scores), "the model, not the rules, scored"


def test_without_a_fitting_model_the_rules_score_and_say_so(recording: Path, tmp_path: Path) -> None:
    (tmp_path / "cex_cex.npz").write_bytes(b"not a model")
    signals = _replay(_with_models(load_config(DEMO_CONFIG_PATH), tmp_path), recording)
    assert signals
    assert {s.model for s in signals} == {"rule"}
