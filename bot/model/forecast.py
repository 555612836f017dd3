"""A k-step forecast of an opportunity's net-edge path, with intervals whose coverage is measured.

The path of one opportunity key's net edge (bps), update by update, is modelled as mean-reverting,
x[t+h] = mu + phi**h * (x[t] - mu), fitted by least squares on consecutive values of the earlier half of the
training windows. The intervals are split-conformal: for each horizon h, the empirical quantiles of the h-step
errors on the later half, so their coverage holds whatever the errors' distribution (fat tails, skew) as long as the
held-out data resemble the training data; `coverage` measures it on held-out windows.

Steps are the key's updates, not fixed time: the risk service turns steps into time with the key's
recent update interval. A window left-padded before its key had T updates repeats its oldest value there:
`without_padding` blanks those steps (NaN), which the fit and `coverage` leave out like any missing value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]

_PHI_LIMIT = 0.999


@dataclass(frozen=True, slots=True)
class PathForecast:
    """Forecasts for a batch of origins: each array is (batch, horizon), step 1 first."""

    mean: Array
    lower: Array
    upper: Array


@dataclass(frozen=True, slots=True)
class SpreadForecaster:
    """Mean-reverting path forecast with per-horizon conformal intervals at `level`."""

    mu: float
    phi: float
    level: float
    error_lower: Array  # (horizon,) quantile (1 - level) / 2 of the h-step errors
    error_upper: Array  # (horizon,) quantile (1 + level) / 2

    @property
    def horizon(self) -> int:
        """Return how many steps ahead the forecaster goes."""
        return int(self.error_lower.shape[0])

    def point(self, current: Array) -> Array:
        """Return the mean path (batch, horizon) from the current net edges (batch,)."""
        current = np.asarray(current, dtype=np.float64)
        decay = self.phi ** np.arange(1, self.horizon + 1)
        return np.asarray(self.mu + (current[:, None] - self.mu) * decay[None, :])

    def forecast(self, current: Array) -> PathForecast:
        """Return the mean path and its interval for each current net edge (batch,)."""
        mean = self.point(current)
        return PathForecast(mean, mean + self.error_lower[None, :], mean + self.error_upper[None, :])

    def to_arrays(self) -> dict[str, Array]:
        """Return the forecaster as named arrays (stored as `baseline.forecast.*` in a model file)."""
        return {
            "forecast.params": np.array([self.mu, self.phi, self.level]),
            "forecast.error_lower": np.asarray(self.error_lower, dtype=np.float64),
            "forecast.error_upper": np.asarray(self.error_upper, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Array]) -> SpreadForecaster:
        """Rebuild a forecaster from `to_arrays`' output; KeyError if a part is missing."""
        mu, phi, level = (float(v) for v in arrays["forecast.params"])
        return cls(
            mu, phi, level, np.asarray(arrays["forecast.error_lower"]), np.asarray(arrays["forecast.error_upper"])
        )


def _clean(series: Array) -> Array:
    series = np.asarray(series, dtype=np.float64)
    if series.ndim != 2:
        raise ValueError(f"series must be (windows, steps), got shape {series.shape}")
    return series


def without_padding(series: Array, real_steps: Array) -> NDArray[np.float64]:
    """Return a copy of `series` (windows, steps) with each window's padding, the steps before its last
    `real_steps[i]`, set to NaN."""
    series = _clean(series)
    real = np.asarray(real_steps)
    if real.shape != series.shape[:1]:
        raise ValueError(f"real_steps must have shape ({series.shape[0]},), got {real.shape}")
    steps = series.shape[1]
    padded = np.arange(steps)[None, :] < (steps - real[:, None])
    return np.where(padded, np.nan, series)


def _errors(series: Array, mu: float, phi: float, h: int) -> Array:
    """Return every h-step error of the mean path over all origins of all windows, finite ones only."""
    origins, targets = series[:, :-h], series[:, h:]
    errors = targets - (mu + (origins - mu) * phi**h)
    flat = errors.ravel()
    return flat[np.isfinite(flat)]


def fit_forecaster(series: Array, horizon: int = 8, level: float = 0.9) -> SpreadForecaster:
    """Fit on net-edge windows (windows, steps), oldest step first, in time order; windows need more than
    `horizon` steps. The mean path is fitted on the earlier half of the windows and the intervals' quantiles are
    taken on the later half (split conformal), so the errors are out of sample."""
    series = _clean(series)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if horizon < 1 or series.shape[1] <= horizon:
        raise ValueError(f"need 1 <= horizon < steps per window ({series.shape[1]}), got {horizon}")
    if series.shape[0] < 2:
        raise ValueError("need at least 2 windows: one part to fit the mean path, one to calibrate the intervals")
    half = series.shape[0] // 2
    fit_part, calibration = series[:half], series[half:]
    x, y = fit_part[:, :-1].ravel(), fit_part[:, 1:].ravel()
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size < 2:
        raise ValueError("too few finite consecutive values to fit a forecaster")
    mu = float(np.mean(fit_part[np.isfinite(fit_part)]))
    dx, dy = x - mu, y - mu
    denominator = float(dx @ dx)
    phi = float(dx @ dy) / denominator if denominator > 0.0 else 0.0
    phi = min(_PHI_LIMIT, max(-_PHI_LIMIT, phi))
    tail = (1.0 - level) / 2.0
    lower = np.empty(horizon)
    upper = np.empty(horizon)
    for h in range(1, horizon + 1):
        errors = _errors(calibration, mu, phi, h)
        lower[h - 1], upper[h - 1] = np.quantile(errors, [tail, 1.0 - tail]) if errors.size else (0.0, 0.0)
    return SpreadForecaster(mu, phi, level, lower, upper)


def coverage(forecaster: SpreadForecaster, series: Array) -> dict[str, Any]:
    """Measure, on held-out windows, how often each horizon's interval held the realised net edge."""
    series = _clean(series)
    per_horizon = []
    counts = []
    for h in range(1, forecaster.horizon + 1):
        if series.shape[1] <= h:
            break
        origins, targets = series[:, :-h].ravel(), series[:, h:].ravel()
        finite = np.isfinite(origins) & np.isfinite(targets)
        origins, targets = origins[finite], targets[finite]
        mean = forecaster.mu + (origins - forecaster.mu) * forecaster.phi**h
        inside = (targets >= mean + forecaster.error_lower[h - 1]) & (targets <= mean + forecaster.error_upper[h - 1])
        per_horizon.append(float(inside.mean()) if inside.size else float("nan"))
        counts.append(int(inside.size))
    measured = [c for c in per_horizon if np.isfinite(c)]
    return {
        "nominal": forecaster.level,
        "coverage_by_step": per_horizon,
        "coverage": float(np.mean(measured)) if measured else float("nan"),
        "points": int(sum(counts)),
        "phi": forecaster.phi,
        "mu_bps": forecaster.mu,
    }
