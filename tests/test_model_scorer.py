"""The live model scorer: which file scores what, rule fallback, reload on change, the age flag.

The network's outputs come from a small prediction function defined here (it reads the heads' biases), so each
test knows which file scored; the real `bot.model.predict` is exercised end to end in tests/test_model_live.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.config import RuleScorerConfig
from bot.model.file import ModelFile, save_model
from bot.model.heads import Heads
from bot.model.lstm import LSTM
from bot.replay import ReplayClock
from bot.scoring.model import ModelScorer, created_epoch_s, model_file_names
from bot.scoring.rule import RuleScorer
from strategies.base import Evaluation, OpportunityKey

FEATURES = ("edge", "depth", "lag")


class Windows:
    """A feature-window source holding fixed windows (B, T, F) per key."""

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.features = FEATURES
        self.asked: list[tuple[OpportunityKey, ...]] = []

    def windows(self, keys: Sequence[OpportunityKey]) -> np.ndarray:
        self.asked.append(tuple(keys))
        # Column j holds j, so a test can see which features reached the model.
        return np.broadcast_to(
            np.arange(len(FEATURES), dtype=np.float32), (len(keys), self.window, len(FEATURES))
        ).copy()


def bias_predict(model: ModelFile, raw: np.ndarray) -> Mapping[str, np.ndarray]:
    """Outputs read from the heads' biases, so a test can tell models apart; NaN windows give NaN."""
    batch = raw.shape[0]
    poison = np.where(np.isnan(raw).any(axis=(1, 2)), np.nan, 0.0)
    heads = model.heads.params
    return {
        "p_profitable": np.full(batch, float(heads["head.p_profitable.bias"][0])) + poison,
        "lifetime_ms": np.full(batch, float(heads["head.lifetime_log_ms.bias"][0])),
        "edge_bps": np.full(batch, float(heads["head.edge_bps.bias"][0])),
    }


def write_model(
    path: Path,
    p: float,
    name: str,
    features: tuple[str, ...] = FEATURES,
    window: int = 4,
    created: Any = None,
) -> None:
    rng = np.random.default_rng(0)
    lstm = LSTM.init(len(features), 4, rng=rng)
    heads = Heads.init(4, rng)
    heads.params["head.p_profitable.bias"][0] = p
    heads.params["head.lifetime_log_ms.bias"][0] = 300.0
    heads.params["head.edge_bps.bias"][0] = 2.5
    meta = {
        "features": list(features),
        "window": window,
        "normalisation": {},
        "architecture": {"hidden": 4, "layers": 1},
        "label": {},
        "data_fingerprint": "f" * 16,
        "metrics": {},
        "created": time.time() if created is None else created,
        "model": name,
    }
    save_model(path, lstm, heads, meta)


def evaluation(symbol: str = "BTC/USDT", kind: str = "cex_cex", buy: str = "alpha") -> Evaluation:
    return Evaluation(kind, symbol, buy, "beta", 1, 1, 1, 0.1, 100.0, 100.2, 20.0, 12.0, 0.05, True)


def make_scorer(model_dir: Path, windows: Windows | None = None, clock: ReplayClock | None = None) -> ModelScorer:
    return ModelScorer(
        model_dir,
        windows or Windows(),
        RuleScorer(RuleScorerConfig()),
        bias_predict,
        clock or ReplayClock(),
        max_age_h=24.0,
        reload_check_s=5.0,
    )


def test_without_model_files_the_rule_scorer_scores_and_says_so(tmp_path: Path) -> None:
    scorer = make_scorer(tmp_path)
    scores = scorer.score_batch([evaluation(), evaluation("ETH/USDT")])
    rule = RuleScorer(RuleScorerConfig()).score(evaluation())
    assert [s.model for s in scores] == ["rule", "rule"]
    assert scores[0] == rule
    assert scorer.stats.by_rule == 2 and scorer.stats.by_model == 0


def test_a_symbols_own_model_wins_over_the_kinds_model(tmp_path: Path) -> None:
    per_symbol, per_kind = model_file_names("cex_cex", "BTC/USDT")
    assert (per_symbol, per_kind) == ("cex_cex__BTC-USDT.npz", "cex_cex.npz")
    write_model(tmp_path / per_kind, 0.3, "kind@1")
    write_model(tmp_path / per_symbol, 0.7, "btc@1")
    windows = Windows()
    scorer = make_scorer(tmp_path, windows)

    scores = scorer.score_batch(
        [evaluation(), evaluation("ETH/USDT"), evaluation(buy="gamma"), evaluation(kind="cex_dex")]
    )

    assert [s.model for s in scores] == ["btc@1", "kind@1", "btc@1", "rule"]
    assert [s.score for s in scores[:3]] == pytest.approx([0.7, 0.3, 0.7])
    assert scores[0].expected_lifetime_ms == pytest.approx(300.0)
    assert scores[0].expected_edge_bps == pytest.approx(2.5)
    # One batch per model: the two BTC evaluations were windowed together.
    assert sorted(len(keys) for keys in windows.asked) == [1, 2]


def test_a_model_for_other_features_or_a_longer_window_is_not_used(tmp_path: Path) -> None:
    write_model(tmp_path / "cex_cex.npz", 0.9, "other@1", features=("edge", "spread"))
    write_model(tmp_path / "cex_cex__ETH-USDT.npz", 0.9, "long@1", window=16)
    scorer = make_scorer(tmp_path, Windows(window=8))
    scores = scorer.score_batch([evaluation(), evaluation("ETH/USDT")])
    assert [s.model for s in scores] == ["rule", "rule"]
    assert scorer.stats.load_errors == 2


def test_a_changed_file_is_reloaded_after_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "cex_cex.npz"
    write_model(path, 0.2, "first@1")
    clock = ReplayClock()
    clock.advance(1_000)
    scorer = make_scorer(tmp_path, clock=clock)
    assert scorer.score_batch([evaluation()])[0].model == "first@1"

    write_model(path, 0.8, "second@1")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))  # a distinct mtime even on coarse clocks
    clock.advance(3_000)  # 2 s later: not checked yet
    assert scorer.score_batch([evaluation()])[0].model == "first@1"
    clock.advance(7_000)
    score = scorer.score_batch([evaluation()])[0]
    assert (score.model, score.score) == ("second@1", pytest.approx(0.8))

    path.unlink()
    clock.advance(20_000)
    assert scorer.score_batch([evaluation()])[0].model == "rule"


def test_an_old_model_scores_but_is_flagged_for_retraining(tmp_path: Path) -> None:
    write_model(tmp_path / "cex_cex.npz", 0.6, "old@1", created=time.time() - 25 * 3_600)
    write_model(tmp_path / "cex_cex__ETH-USDT.npz", 0.6, "new@1")
    scorer = make_scorer(tmp_path)
    scores = scorer.score_batch([evaluation(), evaluation("ETH/USDT")])
    assert [s.model for s in scores] == ["old@1", "new@1"]
    assert scorer.stats.stale_models == {"old@1"}


def test_non_finite_model_output_falls_back_to_the_rules(tmp_path: Path) -> None:
    write_model(tmp_path / "cex_cex.npz", 0.6, "m@1")

    class NanWindows(Windows):
        def windows(self, keys: Sequence[OpportunityKey]) -> np.ndarray:
            return np.full((len(keys), self.window, len(FEATURES)), np.nan, dtype=np.float32)

    scorer = make_scorer(tmp_path, NanWindows())
    assert scorer.score_batch([evaluation()])[0].model == "rule"
    assert scorer.stats.non_finite == 1


def test_creation_times_are_read_in_every_documented_form() -> None:
    assert created_epoch_s({"created": "2026-11-21T10:00:00+00:00"}) == pytest.approx(1_795_255_200.0)
    assert created_epoch_s({"created": 1_795_255_200}) == pytest.approx(1_795_255_200.0)
    assert created_epoch_s({"created": 1_795_255_200_000}) == pytest.approx(1_795_255_200.0)
    assert created_epoch_s({"created": "yesterday"}) is None
    assert created_epoch_s({}) is None


def test_a_model_on_a_subset_of_features_gets_its_columns_in_its_order(tmp_path: Path) -> None:
    write_model(tmp_path / "cex_cex.npz", 0.5, "ablated@1", features=("lag", "edge"), window=3)
    seen: list[np.ndarray] = []

    def recording_predict(model: ModelFile, raw: np.ndarray) -> Mapping[str, np.ndarray]:
        seen.append(raw)
        return bias_predict(model, raw)

    scorer = ModelScorer(tmp_path, Windows(), RuleScorer(RuleScorerConfig()), recording_predict, ReplayClock())
    assert scorer.score_batch([evaluation()])[0].model == "ablated@1"
    assert seen[0].shape == (1, 3, 2)
    np.testing.assert_array_equal(seen[0][0, -1], [2.0, 0.0])


def test_a_model_that_cannot_predict_is_dropped_until_its_file_changes(tmp_path: Path) -> None:
    write_model(tmp_path / "cex_cex.npz", 0.5, "broken@1")
    calls: list[int] = []

    def failing_predict(model: ModelFile, raw: np.ndarray) -> Mapping[str, np.ndarray]:
        calls.append(raw.shape[0])
        raise ValueError("meta lacks targets")

    scorer = ModelScorer(tmp_path, Windows(), RuleScorer(RuleScorerConfig()), failing_predict, ReplayClock())
    assert [s.model for s in scorer.score_batch([evaluation(), evaluation("ETH/USDT")])] == ["rule", "rule"]
    assert scorer.score_batch([evaluation()])[0].model == "rule"
    assert calls == [2]  # one failed batch, then the file is no longer tried
    assert scorer.stats.load_errors == 1
