"""Scores against labels: ROC-AUC, PR-AUC, Brier, and paper PnL from acting once per opportunity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[Any]


def _ranks(values: Array) -> NDArray[np.float64]:
    """Return 1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 … ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _check(y: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    labels = np.asarray(y, dtype=np.float64)
    scores = np.asarray(score, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of the same length, got {labels.shape} and {scores.shape}")
    return labels > 0.5, scores


def roc_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Return the area under the ROC curve (Mann-Whitney, ties count one half); NaN without both classes."""
    labels, scores = _check(y, score)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = float(_ranks(scores)[labels].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def pr_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Return average precision: sum over distinct thresholds of (recall gained) × precision; NaN without positives."""
    labels, scores = _check(y, score)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # One operating point per distinct score: tied samples enter together.
    last_of_tie = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    true_pos = np.cumsum(sorted_labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_pos / predicted
    recall_gain = np.diff(np.r_[0.0, true_pos]) / positives
    return float(np.sum(recall_gain * precision))


def brier(y: ArrayLike, probability: ArrayLike) -> float:
    """Return the mean squared difference between probabilities and 0/1 outcomes."""
    labels, p = _check(y, probability)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean((p - labels) ** 2))


@dataclass(frozen=True)
class PnlResult:
    """Paper trading by one policy: totals and the cumulative PnL at each trade's time."""

    pnl: float
    trades: int
    losing_trades: int
    hit_rate: float
    curve_ts: NDArray[np.int64]
    curve_pnl: NDArray[np.float64]

    def summary(self) -> dict[str, float | int]:
        """Return the totals as plain numbers (for JSON)."""
        return {"pnl": self.pnl, "trades": self.trades, "losing_trades": self.losing_trades, "hit_rate": self.hit_rate}


class PnlSimulator:
    """Act at most once per opportunity, on its first signal the policy accepts, and add up the captured PnL."""

    def __init__(self, opportunity_ids: Sequence[str], ts: ArrayLike, captured_pnl: ArrayLike) -> None:
        """Sort the signals once by (opportunity, time) so that many policies can be tried cheaply."""
        ts_arr = np.asarray(ts, dtype=np.int64)
        pnl = np.asarray(captured_pnl, dtype=np.float64)
        if not len(opportunity_ids) == len(ts_arr) == len(pnl):
            raise ValueError("opportunity_ids, ts and captured_pnl must have the same length")
        _, codes = np.unique(np.asarray(opportunity_ids, dtype=object).astype(str), return_inverse=True)
        self._order = np.lexsort((np.arange(len(ts_arr)), ts_arr, codes))
        self._codes = codes[self._order]
        self._ts = ts_arr[self._order]
        self._pnl = pnl[self._order]

    def __len__(self) -> int:
        """Return the number of signals."""
        return len(self._ts)

    def run(self, act: ArrayLike) -> PnlResult:
        """Return the result of trading the first accepted signal (`act` true) of every opportunity."""
        accept = np.asarray(act, dtype=bool)
        if accept.shape != (len(self),):
            raise ValueError(f"act must have shape ({len(self)},), got {accept.shape}")
        candidates = np.flatnonzero(accept[self._order])
        if len(candidates) == 0:
            return PnlResult(0.0, 0, 0, float("nan"), np.zeros(0, np.int64), np.zeros(0, np.float64))
        first = candidates[np.r_[True, self._codes[candidates[1:]] != self._codes[candidates[:-1]]]]
        pnl, ts = self._pnl[first], self._ts[first]
        by_time = np.argsort(ts, kind="mergesort")
        trades = len(first)
        return PnlResult(
            pnl=float(pnl.sum()),
            trades=trades,
            losing_trades=int((pnl < 0).sum()),
            hit_rate=float((pnl > 0).sum() / trades),
            curve_ts=ts[by_time],
            curve_pnl=np.cumsum(pnl[by_time]),
        )

    def run_scores(self, scores: ArrayLike, threshold: float) -> PnlResult:
        """Return the result of acting when score > threshold."""
        return self.run(np.asarray(scores, dtype=np.float64) > threshold)


def best_threshold(simulator: PnlSimulator, scores: ArrayLike, candidates: int = 101) -> float:
    """Return the threshold among score quantiles that maximises PnL (the highest on ties: fewer trades)."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) == 0:
        return 0.5
    grid = np.unique(np.quantile(values, np.linspace(0.0, 1.0, candidates)))
    # Thresholds just below each quantile so the quantile's own samples are acted on; plus one acting on nothing.
    thresholds = np.r_[np.nextafter(grid, -np.inf), grid[-1]]
    best, best_pnl = float(thresholds[-1]), 0.0
    for threshold in thresholds[::-1]:
        pnl = simulator.run(values > threshold).pnl
        if pnl > best_pnl:
            best, best_pnl = float(threshold), pnl
    return best


def classification_metrics(y: ArrayLike, probability: ArrayLike) -> dict[str, float]:
    """Return roc_auc, pr_auc and brier for probabilities of the positive class."""
    return {"roc_auc": roc_auc(y, probability), "pr_auc": pr_auc(y, probability), "brier": brier(y, probability)}


def calibration_curve(y: ArrayLike, probability: ArrayLike, bins: int = 10) -> tuple[Array, Array, Array]:
    """Return per-bin mean predicted probability, observed frequency and count over equal-width bins of [0, 1]."""
    labels, p = _check(y, probability)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / counts
        observed = np.bincount(index, weights=labels.astype(np.float64), minlength=bins) / counts
    keep = counts > 0
    return mean_p[keep], observed[keep], counts[keep]
