"""Metrics against hand-computed values and brute force; the PnL policy acts once per opportunity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bot.model.metrics import (
    PnlSimulator,
    best_threshold,
    brier,
    calibration_curve,
    pr_auc,
    roc_auc,
)


def _auc_brute_force(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_by_hand() -> None:
    # Positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 0.9>0.5, 0.9>0.1, 0.4>0.1, lost 0.4<0.5 → 3/4.
    assert roc_auc([1, 0, 1, 0], [0.9, 0.5, 0.4, 0.1]) == pytest.approx(0.75)
    assert roc_auc([1, 1, 0, 0], [0.2, 0.2, 0.2, 0.2]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_roc_auc_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 6, 40).astype(float)  # many ties
        if 0 < y.sum() < len(y):
            assert roc_auc(y, s) == pytest.approx(_auc_brute_force(y, s))


def test_pr_auc_by_hand() -> None:
    # Ranked 1, 0, 1, 0: precision 1 at recall 1/2, 2/3 at recall 1 → 1/2 + 1/3.
    assert pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    # All tied: one operating point, precision = base rate.
    assert pr_auc([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.25)
    assert pr_auc([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)


def test_brier_by_hand() -> None:
    assert brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)


def test_pnl_acts_once_per_opportunity_on_first_accepted_signal() -> None:
    ids = ["a", "b", "a", "b", "a", "c"]
    ts = [10, 11, 12, 13, 14, 15]
    pnl = [-1.0, 5.0, 2.0, 7.0, 3.0, -4.0]
    sim = PnlSimulator(ids, ts, pnl)
    result = sim.run_scores([0.1, 0.9, 0.6, 0.9, 0.9, 0.7], threshold=0.5)
    # a: first accepted at ts 12 (+2); b: ts 11 (+5); c: ts 15 (-4).
    assert result.pnl == pytest.approx(3.0)
    assert (result.trades, result.losing_trades) == (3, 1)
    assert result.hit_rate == pytest.approx(2 / 3)
    assert result.curve_ts.tolist() == [11, 12, 15]
    assert result.curve_pnl.tolist() == pytest.approx([5.0, 7.0, 3.0])
    empty = sim.run(np.zeros(6, dtype=bool))
    assert (empty.pnl, empty.trades) == (0.0, 0)


def test_pnl_order_is_by_time_not_by_row() -> None:
    sim = PnlSimulator(["a", "a"], [20, 10], [1.0, -1.0])
    assert sim.run([True, True]).pnl == pytest.approx(-1.0)


def test_best_threshold_maximises_pnl() -> None:
    # High scores are winners, low scores losers: the best threshold keeps exactly the winners.
    ids = [str(i) for i in range(6)]
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    sim = PnlSimulator(ids, np.arange(6), [1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    threshold = best_threshold(sim, scores)
    assert 0.3 <= threshold < 0.7
    assert sim.run_scores(scores, threshold).pnl == pytest.approx(3.0)
    # Everything loses: act on nothing.
    losing = PnlSimulator(ids, np.arange(6), [-1.0] * 6)
    assert losing.run_scores(scores, best_threshold(losing, scores)).trades == 0


def test_calibration_curve_bins() -> None:
    mean_p, observed, counts = calibration_curve([0, 1, 1, 1], [0.05, 0.05, 0.95, 0.9], bins=10)
    assert counts.tolist() == [2, 2]
    assert mean_p.tolist() == pytest.approx([0.05, 0.925])
    assert observed.tolist() == pytest.approx([0.5, 1.0])
