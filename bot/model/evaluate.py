"""Score a trained model and its baselines on held-out data: the table, the goals, the calibration and PnL plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bot.model.file import ModelFile
from bot.model.forecast import SpreadForecaster, coverage, without_padding
from bot.model.metrics import PnlResult, PnlSimulator, calibration_curve, classification_metrics
from bot.model.train import scorer_outputs

if TYPE_CHECKING:
    from bot.model.dataset import Dataset

SCORERS = ("lstm", "logistic", "naive", "rule")
_COLOURS = {"lstm": "C0", "logistic": "C1", "naive": "C3", "rule": "C2"}
AUC_MARGIN = 0.05
PNL_FACTOR = 1.3


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _clean(obj: Any) -> Any:
    """Replace NaN and infinities by None so the JSON is strict."""
    if isinstance(obj, dict):
        return {key: _clean(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_clean(value) for value in obj]
    if isinstance(obj, float):
        return _finite(obj)
    return obj


def check_goals(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the issue's goals for the LSTM against the baselines, each with its rule and met / not met."""
    lstm, logistic, naive = table["lstm"], table["logistic"], table["naive"]
    auc_ok = (
        lstm["roc_auc"] is not None
        and logistic["roc_auc"] is not None
        and lstm["roc_auc"] >= logistic["roc_auc"] + AUC_MARGIN
    )
    # With a losing naive policy, "1.3 x naive" would accept losses: ask for no loss (standing aside) instead.
    pnl_ok = lstm["pnl"] >= PNL_FACTOR * naive["pnl"] if naive["pnl"] > 0 else lstm["pnl"] >= 0
    losing_ok = lstm["losing_trades"] < naive["losing_trades"]
    return {
        "lstm_auc_vs_logistic": {"rule": f"lstm roc_auc >= logistic roc_auc + {AUC_MARGIN}", "met": auc_ok},
        "lstm_pnl_vs_naive": {
            "rule": f"lstm pnl >= {PNL_FACTOR} x naive pnl (>= 0 when naive pnl <= 0)",
            "met": pnl_ok,
        },
        "lstm_fewer_losing_trades": {"rule": "lstm losing_trades < naive losing_trades", "met": losing_ok},
        "all_met": auc_ok and pnl_ok and losing_ok,
    }


def evaluate_model(
    model: ModelFile, dataset: Dataset
) -> tuple[dict[str, Any], dict[str, NDArray[np.float64]], dict[str, PnlResult]]:
    """Return the evaluation report (JSON-ready), every scorer's scores and PnL result (for plotting)."""
    if len(dataset) == 0:
        raise ValueError("no samples in the evaluation data (no signals of this kind in the range)")
    scores = scorer_outputs(model, dataset)
    y = np.asarray(dataset.profitable, dtype=np.float64)
    simulator = PnlSimulator(dataset.opportunity_ids, dataset.ts, dataset.captured_pnl)
    thresholds: dict[str, float] = dict(model.meta.get("thresholds", {}))
    table: dict[str, dict[str, Any]] = {}
    results: dict[str, PnlResult] = {}
    for name in SCORERS:
        if name == "naive":
            result = simulator.run(np.asarray(dataset.net_edge_bps) > 0)
            threshold = None
        else:
            threshold = float(thresholds.get(name, 0.5))
            result = simulator.run_scores(scores[name], threshold)
        results[name] = result
        table[name] = {**classification_metrics(y, scores[name]), **result.summary(), "threshold": threshold}
    lifetime = np.asarray(dataset.lifetime_ms, dtype=np.float64)
    # A censored lifetime is a lower bound, not the lifetime: it has no error to measure.
    exact = ~np.asarray(dataset.lifetime_censored, dtype=bool)
    lifetime_errors = np.abs(scores["lifetime_ms"] - lifetime)[exact]
    table["lstm"]["lifetime_mae_ms"] = float(np.mean(lifetime_errors)) if len(lifetime_errors) else float("nan")
    table["lstm"]["lifetime_samples"] = int(np.count_nonzero(exact))
    table["lstm"]["lifetime_censored"] = int(len(dataset) - np.count_nonzero(exact))
    table["lstm"]["edge_mae_bps"] = float(np.mean(np.abs(scores["edge_bps"] - dataset.captured_edge_bps)))
    table = _clean(table)
    forecast = _forecast_coverage(model, dataset)
    lstm_auc, logistic_auc = table["lstm"]["roc_auc"], table["logistic"]["roc_auc"]
    report: dict[str, Any] = {
        **table,
        "auc_spread_lstm_minus_logistic": (
            lstm_auc - logistic_auc if lstm_auc is not None and logistic_auc is not None else None
        ),
        "goals": check_goals(table),
        "spread_forecast": forecast,
        "data": {
            "samples": len(dataset),
            "opportunities": len(set(dataset.opportunity_ids)),
            "positive_rate": float(y.mean()),
            "mean_captured_pnl": float(np.mean(dataset.captured_pnl)),
            "median_lifetime_ms": float(np.median(lifetime)),
            "censored_lifetimes": int(len(dataset) - np.count_nonzero(exact)),
            "fingerprint": dataset.fingerprint,
            "label": dataset.settings.to_meta(),
        },
        "model": {
            "name": model.meta.get("model"),
            "data_fingerprint": model.meta.get("data_fingerprint"),
            "window": model.meta.get("window"),
            "architecture": model.meta.get("architecture"),
            "label": model.meta.get("label"),
        },
    }
    return _clean(report), scores, results


def _forecast_coverage(model: ModelFile, dataset: Dataset) -> dict[str, Any] | None:
    """Return how often the stored spread-path intervals held the held-out net edge, beside their nominal level."""
    names = list(dataset.feature_names)
    if "net_edge_bps" not in names:
        return None
    try:
        forecaster = SpreadForecaster.from_arrays(model.baselines)
    except KeyError:
        return None
    series = np.asarray(dataset.windows[:, :, names.index("net_edge_bps")], dtype=np.float64)
    return coverage(forecaster, without_padding(series, dataset.real_steps))


def write_plot(
    path: Path, dataset: Dataset, scores: dict[str, NDArray[np.float64]], results: dict[str, PnlResult]
) -> None:
    """Write a PNG: calibration of the probabilistic scorers, and the cumulative PnL of all four over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (calibration, pnl) = plt.subplots(1, 2, figsize=(12, 5))
    y = np.asarray(dataset.profitable, dtype=np.float64)
    calibration.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name in ("lstm", "logistic", "rule"):
        mean_p, observed, _ = calibration_curve(y, scores[name], bins=10)
        calibration.plot(mean_p, observed, marker="o", label=name, color=_COLOURS[name])
    calibration.set(xlabel="predicted P(profitable)", ylabel="observed frequency", title="Calibration", xlim=(0, 1))
    calibration.legend()
    start = int(np.min(dataset.ts))
    for name in SCORERS:
        result = results[name]
        times = np.r_[0.0, (result.curve_ts - start) / 1000.0]
        label = f"{name} ({result.trades} trades)"
        pnl.step(times, np.r_[0.0, result.curve_pnl], where="post", label=label, color=_COLOURS[name])
    pnl.axhline(0.0, color="grey", linewidth=0.8)
    pnl.set(xlabel="seconds into the evaluation data", ylabel="cumulative PnL (quote)", title="Paper PnL")
    pnl.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_evaluation(model: ModelFile, dataset: Dataset, plot: Path | None = None) -> dict[str, Any]:
    """Evaluate, and write the plot when asked; return the report."""
    report, scores, results = evaluate_model(model, dataset)
    if plot is not None:
        write_plot(plot, dataset, scores, results)
    return report


def format_table(report: dict[str, Any]) -> str:
    """Return the evaluation table as aligned text."""
    columns = ("roc_auc", "pr_auc", "brier", "trades", "losing_trades", "hit_rate", "pnl", "threshold")
    lines = [f"{'scorer':<9}" + "".join(f"{c:>14}" for c in columns)]
    for name in SCORERS:
        row = report[name]
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(f"{'-':>14}" if value is None else f"{value:>14.4g}")
        lines.append(f"{name:<9}" + "".join(cells))
    lstm = report["lstm"]
    mae = lstm["lifetime_mae_ms"]
    lines.append(
        f"lstm lifetime MAE {'-' if mae is None else f'{mae:.0f} ms'} over {lstm['lifetime_samples']} exact lifetimes "
        f"({lstm['lifetime_censored']} censored left out), edge MAE {lstm['edge_mae_bps']:.2f} bps"
    )
    data = report["data"]
    lines.append(
        f"{data['samples']} samples, {data['opportunities']} opportunities, {data['positive_rate']:.1%} profitable"
    )
    goals = report["goals"]
    lines.append(
        "goals: "
        + ", ".join(f"{name} {'met' if g['met'] else 'NOT met'}" for name, g in goals.items() if name != "all_met")
    )
    return "\n".join(lines)
