"""Fit the LSTM and its heads on a dataset (exact BPTT, Adam, clipping, early stopping), and the logistic baseline.

Choices, so that they can be argued with:

- Validation is the last `val_fraction` of the training range in time, after a gap (`gap_ms`, at least the label
  latency) during which no sample is used, and without any opportunity that already appeared in training; training
  lifetimes that would look past the validation start are censored there: windows and labels of the two parts
  never overlap. Never a random split: neighbouring windows share most of their steps.
- Class weighting: when the positive rate is below 20 % or above 80 %, minibatches oversample the rarer class up
  to `max_class_weight` times; the classifier's bias is then shifted by -log(weight) so probabilities stay
  calibrated (a prior shift moves only the logit's offset). Between 20 % and 80 % no weighting is used.
- Targets: p_profitable by cross-entropy; log lifetime and captured edge by Huber on robustly scaled values
  (median / IQR), so all three heads train at unit scale. A censored lifetime (still open at the horizon, the end
  of the data or the validation start) is a lower bound: no loss once the prediction reaches it.
- Early stopping on the validation cross-entropy of p_profitable, keeping the best epoch's weights.
- The spread-path forecaster (bot/model/forecast.py) is fitted on the training windows' raw net edge (their
  padding left out) and stored with the baselines, for the risk/timing service; `evaluate` measures its intervals'
  coverage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bot.config import RootConfig
from bot.model.baselines import LogisticModel, fit_logistic, naive_scores
from bot.model.file import ModelFile, save_model
from bot.model.forecast import SpreadForecaster, fit_forecaster, without_padding
from bot.model.heads import HEAD_NAMES, Heads
from bot.model.labels import LabelSettings
from bot.model.lstm import LSTM
from bot.model.metrics import PnlSimulator, best_threshold, classification_metrics
from bot.model.normalise import Normalisation, TargetScale, own_steps
from bot.model.optim import Adam, clip_grad_norm
from bot.model.predict import logistic_predict, predict

if TYPE_CHECKING:
    from bot.model.dataset import Dataset

Array = NDArray[Any]

MODEL_KIND = "lstm"

NET_EDGE_FEATURE = "net_edge_bps"
FORECAST_HORIZON = 8
"""Updates of an opportunity the spread-path forecast looks ahead (stored as `baseline.forecast.*`)."""
FORECAST_LEVEL = 0.9


class TrainError(ValueError):
    """Training cannot proceed on this data; the message says why."""


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training run."""

    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    clip_norm: float = 1.0
    patience: int = 5
    val_fraction: float = 0.2
    gap_ms: int = 10_000
    seed: int = 0
    max_class_weight: float = 10.0
    max_steps_per_epoch: int | None = None
    head_weights: dict[str, float] = field(
        default_factory=lambda: {"p_profitable": 1.0, "lifetime_log_ms": 0.25, "edge_bps": 0.25}
    )
    huber_delta: float = 1.0
    logistic_l2: float = 1e-3

    def __post_init__(self) -> None:
        """Reject settings that cannot train."""
        if self.hidden < 1 or self.layers < 1 or self.epochs < 1 or self.batch_size < 1:
            raise TrainError("hidden, layers, epochs and batch size must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise TrainError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did: mean training loss, validation cross-entropy and ROC-AUC."""

    epoch: int
    epochs: int
    train_loss: float
    val_bce: float
    val_auc: float
    best: bool


@dataclass
class TrainResult:
    """A trained model with its validation figures and training history."""

    model: ModelFile
    history: list[EpochReport]
    train_size: int
    val_size: int
    warnings: list[str] = field(default_factory=list)


def lifetimes_before(dataset: Dataset, limit_ts: int) -> Dataset:
    """Censor lifetimes at `limit_ts`: a training label must not read the market of the validation period.

    Profitability looks only `latency_ms` ahead (the split's gap covers it); a lifetime looks up to the label
    horizon ahead, so training lifetimes that run past the validation start are cut there and marked censored.
    """
    room = np.maximum(limit_ts - np.asarray(dataset.ts, dtype=np.float64), 0.0)
    lifetimes = np.asarray(dataset.lifetime_ms, dtype=np.float64)
    cut = lifetimes > room
    return dataclasses.replace(
        dataset,
        lifetime_ms=np.where(cut, room, lifetimes),
        lifetime_censored=np.asarray(dataset.lifetime_censored, dtype=bool) | cut,
    )


def time_split(dataset: Dataset, val_fraction: float, gap_ms: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Return (train, validation) row indices: validation is the last `val_fraction` of the time span, starting
    `gap_ms` after the last training sample, without opportunities seen in training (unless that leaves none)."""
    ts = np.asarray(dataset.ts, dtype=np.int64)
    if len(ts) == 0:
        raise TrainError("no samples to train on")
    start, end = int(ts.min()), int(ts.max())
    cut = end - round(val_fraction * (end - start))
    train = np.flatnonzero(ts < cut - gap_ms)
    seen = {dataset.opportunity_ids[i] for i in train}
    later = ts >= cut
    val = np.flatnonzero(later & np.array([oid not in seen for oid in dataset.opportunity_ids], dtype=bool))
    if len(val) == 0:
        # Gaps open for the whole recording (a persistent basis): validate on their later signals rather than not
        # at all; the gap still keeps windows apart. `train_model` records it in meta.
        val = np.flatnonzero(later)
    if len(train) == 0 or len(val) == 0:
        raise TrainError(
            f"the data spans {(end - start) / 1000:.0f} s: too short for a training part, a {gap_ms / 1000:.0f} s gap "
            f"and a validation part of {val_fraction:.0%}; record longer"
        )
    return train, val


def parse_range(text: str) -> tuple[float, float]:
    """Parse `A:B` (fractions of the recordings' time span, 0 <= A < B <= 1)."""
    parts = text.split(":")
    try:
        low, high = (float(part) for part in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"bad range {text!r}: need A:B with 0 <= A < B <= 1, e.g. 0:0.7")
    return low, high


def label_settings(base: LabelSettings, fee_bps: float | None = None, latency_ms: int | None = None) -> LabelSettings:
    """Return `base` with one taker fee for every venue (`fee_bps`) and/or another latency, when given."""
    settings = base
    if fee_bps is not None:
        if fee_bps < 0:
            raise ValueError(f"--fee-bps must be >= 0, got {fee_bps}")
        settings = dataclasses.replace(settings, fee_bps={}, default_fee_bps=float(fee_bps))
    if latency_ms is not None:
        if latency_ms < 0:
            raise ValueError(f"--latency-ms must be >= 0, got {latency_ms}")
        settings = dataclasses.replace(settings, latency_ms=int(latency_ms))
    return settings


def config_with_fees(config: RootConfig, settings: LabelSettings) -> RootConfig:
    """Return `config` with every venue's taker fee set to the labels' fee, so signals and labels agree on costs."""
    venues = {
        name: venue.model_copy(update={"taker_fee_bps": settings.fee(name)}) for name, venue in config.venues.items()
    }
    return config.model_copy(update={"venues": venues})


def _targets(dataset: Dataset, lifetime: TargetScale, edge: TargetScale) -> dict[str, NDArray[np.float32]]:
    return {
        "p_profitable": np.asarray(dataset.profitable, dtype=np.float32),
        "lifetime_log_ms": lifetime.encode(np.log(np.maximum(np.asarray(dataset.lifetime_ms, np.float64), 1.0))),
        "edge_bps": edge.encode(dataset.captured_edge_bps),
    }


def _class_weight(labels: Array, max_weight: float) -> tuple[float, float]:
    """Return (weight of positives, weight of negatives) for minibatch sampling."""
    rate = float(np.mean(labels)) if len(labels) else 0.5
    if rate <= 0.0 or rate >= 1.0:
        return 1.0, 1.0  # one class: nothing to reweight; `train_model` warns
    if rate < 0.2:
        return min((1 - rate) / rate, max_weight), 1.0
    if rate > 0.8:
        return 1.0, min(rate / (1 - rate), max_weight)
    return 1.0, 1.0


def _bce(y: Array, p: Array) -> float:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


class _Network:
    """LSTM + heads trained together, with one Adam over both."""

    def __init__(self, n_features: int, settings: TrainSettings, rng: np.random.Generator) -> None:
        self.lstm = LSTM.init(n_features, settings.hidden, settings.layers, rng)
        self.heads = Heads.init(settings.hidden, rng)
        self.params = {**self.lstm.params, **self.heads.params}  # the same arrays: Adam updates both in place
        self.adam = Adam(self.params, lr=settings.lr, on_step=self.lstm.parameters_changed)

    def step(
        self,
        x: Array,
        targets: dict[str, Array],
        censored: Array,
        settings: TrainSettings,
        rng: np.random.Generator,
    ) -> float:
        outputs, cache = self.lstm.forward_train(x, settings.dropout, rng if settings.dropout > 0 else None)
        loss, head_grads, d_h = self.heads.loss(
            outputs[:, -1],
            targets,
            settings.head_weights,
            settings.huber_delta,
            lower_bounds={"lifetime_log_ms": censored},
        )
        grads = self.lstm.backward_last_step(cache, d_h)
        grads.update(head_grads)
        clip_grad_norm(grads, settings.clip_norm)
        self.adam.step(grads)
        return loss

    def probabilities(self, x: Array, batch: int = 1024) -> NDArray[np.float64]:
        out = np.empty(len(x))
        for start in range(0, len(x), batch):
            h_last = self.lstm.forward(x[start : start + batch])[:, -1]
            out[start : start + batch] = self.heads.predict(h_last)["p_profitable"]
        return out

    def snapshot(self) -> dict[str, Array]:
        return {name: value.copy() for name, value in self.params.items()}

    def restore(self, saved: dict[str, Array]) -> None:
        for name, value in saved.items():
            self.params[name][...] = value
        self.lstm.parameters_changed()


def _epoch_batches(
    n: int, weights: Array, settings: TrainSettings, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    if np.all(weights == weights[0]):
        order = rng.permutation(n)
    else:
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    batches = [order[i : i + settings.batch_size] for i in range(0, n, settings.batch_size)]
    if settings.max_steps_per_epoch is not None:
        batches = batches[: settings.max_steps_per_epoch]
    return batches


def fit_network(
    train_x: Array,
    train_targets: dict[str, Array],
    val_x: Array,
    val_y: Array,
    settings: TrainSettings,
    on_epoch: Callable[[EpochReport], None] | None = None,
    lifetime_censored: Array | None = None,
) -> tuple[LSTM, Heads, list[EpochReport], dict[str, Any]]:
    """Train on normalised windows; return the best epoch's LSTM and heads, the history and what was chosen.

    `lifetime_censored` marks the training lifetimes that are lower bounds (None: every lifetime is exact).
    """
    rng = np.random.default_rng(settings.seed)
    censored = np.zeros(len(train_x), dtype=bool) if lifetime_censored is None else np.asarray(lifetime_censored, bool)
    net = _Network(train_x.shape[2], settings, rng)
    labels = train_targets["p_profitable"]
    w_pos, w_neg = _class_weight(labels, settings.max_class_weight)
    sample_weights = np.where(labels > 0.5, w_pos, w_neg).astype(np.float64)
    # Oversampling multiplies the odds by w_pos / w_neg: undo it in the classifier's bias at every evaluation.
    bias_shift = float(np.log(w_pos / w_neg))
    bias = net.heads.params["head.p_profitable.bias"]
    history: list[EpochReport] = []
    best_bce, best_state, best_epoch, stale = float("inf"), net.snapshot(), 0, 0
    for epoch in range(1, settings.epochs + 1):
        losses = []
        for idx in _epoch_batches(len(train_x), sample_weights, settings, rng):
            idx = np.sort(idx)  # contiguous-ish reads are faster; order within a batch does not matter
            batch_targets = {name: train_targets[name][idx] for name in HEAD_NAMES}
            losses.append(net.step(train_x[idx], batch_targets, censored[idx], settings, rng))
        bias -= bias_shift
        p_val = net.probabilities(val_x)
        bias += bias_shift
        val_bce = _bce(val_y, p_val)
        val_auc = classification_metrics(val_y, p_val)["roc_auc"]
        improved = val_bce < best_bce - 1e-5
        if improved:
            best_bce, best_state, best_epoch, stale = val_bce, net.snapshot(), epoch, 0
        else:
            stale += 1
        report = EpochReport(epoch, settings.epochs, float(np.mean(losses)), val_bce, val_auc, improved)
        history.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if stale >= settings.patience:
            break
    net.restore(best_state)
    bias -= bias_shift
    chosen = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "class_weight": {"positive": w_pos, "negative": w_neg, "bias_shift": bias_shift},
    }
    return net.lstm, net.heads, history, chosen


def _fingerprint_params(lstm: LSTM, heads: Heads) -> str:
    digest = hashlib.sha256()
    for name, value in {**lstm.params, **heads.params}.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:8]


def scorer_outputs(model: ModelFile, dataset: Dataset, batch: int = 1024) -> dict[str, NDArray[np.float64]]:
    """Return every scorer's score per sample (`lstm`, `logistic`, `naive`, `rule`) and the LSTM's regressions."""
    windows = np.asarray(dataset.windows)
    parts: dict[str, list[NDArray[np.float64]]] = {"p_profitable": [], "lifetime_ms": [], "edge_bps": []}
    for start in range(0, len(windows), batch):
        out = predict(model, windows[start : start + batch])
        for name, values in out.items():
            parts[name].append(values)
    joined = {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}
    return {
        "lstm": joined["p_profitable"],
        "logistic": logistic_predict(model, windows[:, -1, :]),
        "naive": naive_scores(dataset.net_edge_bps),
        "rule": np.asarray(dataset.rule_score, dtype=np.float64),
        "lifetime_ms": joined["lifetime_ms"],
        "edge_bps": joined["edge_bps"],
    }


def choose_thresholds(scores: dict[str, NDArray[np.float64]], dataset: Dataset) -> dict[str, float]:
    """Return, per thresholded scorer, the threshold that maximises paper PnL on `dataset` (validation data)."""
    simulator = PnlSimulator(dataset.opportunity_ids, dataset.ts, dataset.captured_pnl)
    return {name: best_threshold(simulator, scores[name]) for name in ("lstm", "logistic", "rule")}


def train_model(
    dataset: Dataset,
    settings: TrainSettings,
    on_epoch: Callable[[EpochReport], None] | None = None,
    kind: str = "cex_cex",
    extra_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Split in time, fit normalisation, network and logistic baseline, choose thresholds on validation."""
    train_idx, val_idx = time_split(dataset, settings.val_fraction, max(settings.gap_ms, dataset.settings.latency_ms))
    train, val = dataset.subset(train_idx, "train"), dataset.subset(val_idx, "validation")
    train = lifetimes_before(train, int(np.min(val.ts)))
    windows = np.asarray(train.windows)
    norm = Normalisation.fit(own_steps(windows, train.real_steps), seed=settings.seed)  # not the padding
    lifetime = TargetScale.fit(np.log(np.maximum(np.asarray(train.lifetime_ms, np.float64), 1.0)))
    edge = TargetScale.fit(train.captured_edge_bps)
    train_x, val_x = norm.apply(windows), norm.apply(val.windows)
    val_y = np.asarray(val.profitable, dtype=np.float64)
    lstm, heads, history, chosen = fit_network(
        train_x, _targets(train, lifetime, edge), val_x, val_y, settings, on_epoch, train.lifetime_censored
    )
    logistic: LogisticModel = fit_logistic(windows[:, -1, :], train.profitable, l2=settings.logistic_l2)
    version = _fingerprint_params(lstm, heads)
    meta: dict[str, Any] = {
        "model": f"{MODEL_KIND}@{version}",
        "kind": kind,
        "features": list(dataset.feature_names),
        "window": int(windows.shape[1]),
        "normalisation": norm.to_meta(),
        "targets": {"lifetime_log_ms": lifetime.to_meta(), "edge_bps": edge.to_meta()},
        "architecture": {
            "type": MODEL_KIND,
            "input_size": int(windows.shape[2]),
            "hidden": settings.hidden,
            "layers": settings.layers,
            "dropout": settings.dropout,
            "heads": list(HEAD_NAMES),
        },
        "label": dataset.settings.to_meta(),
        "data_fingerprint": dataset.fingerprint,
        "training": {
            **{k: v for k, v in dataclasses.asdict(settings).items()},
            **chosen,
            "train_samples": len(train_idx),
            "val_samples": len(val_idx),
            "train_positive_rate": float(np.mean(train.profitable)),
            "train_censored_lifetimes": int(np.count_nonzero(train.lifetime_censored)),
            "val_positive_rate": float(np.mean(val.profitable)),
            "val_start_ts": int(np.min(val.ts)),
            "train_end_ts": int(np.max(train.ts)),
        },
        "metrics": {},
        "thresholds": {},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra_meta or {}),
    }
    warnings = []
    rate = float(np.mean(train.profitable))
    if rate in (0.0, 1.0):
        warnings.append(f"every training label is {int(rate)}: the model can only learn that (check fees and latency)")
    shared = {train.opportunity_ids[i] for i in range(len(train))} & set(val.opportunity_ids)
    if shared:
        warnings.append(f"{len(shared)} opportunities stay open across the train/validation gap; validation uses them")
    meta["training"]["val_shares_opportunities"] = bool(shared)
    meta["training"]["warnings"] = warnings
    forecaster = fit_spread_forecaster(dataset.feature_names, windows, train.real_steps)
    baselines = {**logistic.to_arrays(), **(forecaster.to_arrays() if forecaster is not None else {})}
    model = ModelFile(lstm, heads, meta, baselines)
    scores = scorer_outputs(model, val)
    meta["thresholds"] = choose_thresholds(scores, val)
    meta["metrics"] = {
        "validation": {name: classification_metrics(val_y, scores[name]) for name in ("lstm", "logistic", "rule")},
        "history": [dataclasses.asdict(report) for report in history],
    }
    return TrainResult(model, history, len(train_idx), len(val_idx), warnings)


def fit_spread_forecaster(
    feature_names: Sequence[str], windows: Array, real_steps: Array | None = None
) -> SpreadForecaster | None:
    """Fit the spread-path forecaster on the training windows' net edge, if the features carry it and the windows
    hold enough of it; `real_steps` (`Dataset.real_steps`) leaves each window's padding out."""
    if NET_EDGE_FEATURE not in feature_names or windows.shape[1] < 2:
        return None
    series = np.asarray(windows[:, :, list(feature_names).index(NET_EDGE_FEATURE)], dtype=np.float64)
    horizon = min(FORECAST_HORIZON, windows.shape[1] - 1)  # a window of T steps shows at most T - 1 ahead
    if real_steps is not None:
        series = without_padding(series, real_steps)
    try:
        return fit_forecaster(series, horizon=horizon, level=FORECAST_LEVEL)
    except ValueError:
        return None  # too few windows or real steps to fit one: the model file goes without a forecaster


def write_model(result: TrainResult, path: Path) -> None:
    """Save a trained model file (LSTM, heads, logistic baseline, meta)."""
    model = result.model
    save_model(path, model.lstm, model.heads, model.meta, model.baselines)
