"""Per-feature standardisation fitted on training data, robust to outliers, constant features and NaNs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]

CLIP = 10.0
_TAIL = 0.005  # winsorise the fitting sample at these quantiles so one spike does not set the scale
_MAX_ROWS = 200_000


def own_steps(windows: Array, real_steps: Array) -> Array:
    """Return the rows (n, F) of `windows` (N, T, F) that are their key's own steps, leaving out the padding
    (the first T - real_steps[i] steps of window i repeat its oldest step)."""
    windows = np.asarray(windows)
    real = np.asarray(real_steps)
    if windows.ndim != 3 or real.shape != windows.shape[:1]:
        raise ValueError(f"need windows (N, T, F) and real_steps (N,), got {windows.shape} and {real.shape}")
    steps = windows.shape[1]
    own = np.arange(steps)[None, :] >= (steps - np.clip(real, 1, steps))[:, None]
    rows: Array = windows[own]
    return rows


@dataclass(frozen=True)
class Normalisation:
    """z = clip((x - mean) / std, ±clip), NaN → 0; mean and std per feature."""

    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    clip: float = CLIP

    @classmethod
    def fit(cls, rows: Array, seed: int = 0) -> Normalisation:
        """Fit on feature rows (..., F), using at most 200k rows drawn with `seed`."""
        flat = np.asarray(rows, dtype=np.float64).reshape(-1, np.shape(rows)[-1])
        if len(flat) > _MAX_ROWS:
            flat = flat[np.random.default_rng(seed).choice(len(flat), _MAX_ROWS, replace=False)]
        mean = np.zeros(flat.shape[1])
        std = np.ones(flat.shape[1])
        for j in range(flat.shape[1]):
            column = flat[:, j][np.isfinite(flat[:, j])]
            if len(column) == 0:
                continue
            low, high = np.quantile(column, [_TAIL, 1.0 - _TAIL])
            column = np.clip(column, low, high)
            mean[j] = column.mean()
            spread = column.std()
            std[j] = spread if spread > 1e-12 * max(1.0, abs(mean[j])) else 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: Array) -> NDArray[np.float32]:
        """Return normalised float32 features, same shape as `x`."""
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        np.clip(z, -self.clip, self.clip, out=z)  # ±inf to ±clip; NaN stays NaN
        np.copyto(z, 0.0, where=np.isnan(z))  # half the cost of np.nan_to_num, which scans for every case
        return z

    def to_meta(self) -> dict[str, Any]:
        """Return a JSON-ready description."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Normalisation:
        """Read what `to_meta` wrote."""
        return cls(
            np.asarray(meta["mean"], dtype=np.float32),
            np.asarray(meta["std"], dtype=np.float32),
            float(meta.get("clip", CLIP)),
        )


@dataclass(frozen=True)
class TargetScale:
    """A regression target stored as (y - offset) / scale so its head trains at unit scale."""

    offset: float
    scale: float

    @classmethod
    def fit(cls, y: Array) -> TargetScale:
        """Fit on targets with median and interquartile range (robust to the long tails of edges and lifetimes)."""
        values = np.asarray(y, dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return cls(0.0, 1.0)
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        spread = (q75 - q25) / 1.349  # IQR of a standard normal
        if spread <= 1e-9:
            spread = float(values.std()) or 1.0
        return cls(float(median), float(spread))

    def encode(self, y: Array) -> NDArray[np.float32]:
        """Return scaled targets."""
        return ((np.asarray(y, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def decode(self, z: Array) -> NDArray[np.float64]:
        """Return targets in their own units."""
        return np.asarray(z, dtype=np.float64) * self.scale + self.offset

    def to_meta(self) -> dict[str, float]:
        """Return a JSON-ready description."""
        return {"offset": self.offset, "scale": self.scale}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> TargetScale:
        """Read what `to_meta` wrote."""
        return cls(float(meta["offset"]), float(meta["scale"]))
