"""Baselines the LSTM must beat: logistic regression on the current feature vector, naive, and the rule scorer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bot.model.normalise import Normalisation

Array = NDArray[Any]

BASELINE_NAMES = ("logistic", "naive", "rule")


def _sigmoid(z: Array) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64))))


@dataclass(frozen=True)
class LogisticModel:
    """P(profitable) = sigmoid(intercept + coef · normalised current features)."""

    coef: NDArray[np.float64]
    intercept: float
    normalisation: Normalisation

    def predict(self, current: ArrayLike) -> NDArray[np.float64]:
        """Return probabilities for raw current feature vectors (N, F)."""
        z = self.normalisation.apply(np.asarray(current)).astype(np.float64)
        return _sigmoid(z @ self.coef + self.intercept)

    def to_arrays(self) -> dict[str, Array]:
        """Return the arrays stored in a model file under `baseline.logistic.*`."""
        return {
            "logistic.coef": self.coef.astype(np.float64),
            "logistic.intercept": np.array([self.intercept], dtype=np.float64),
            "logistic.mean": self.normalisation.mean,
            "logistic.std": self.normalisation.std,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Array]) -> LogisticModel:
        """Read the arrays `to_arrays` wrote (keys without the `baseline.` prefix)."""
        try:
            return cls(
                np.asarray(arrays["logistic.coef"], dtype=np.float64),
                float(np.asarray(arrays["logistic.intercept"]).reshape(-1)[0]),
                Normalisation(
                    np.asarray(arrays["logistic.mean"], dtype=np.float32),
                    np.asarray(arrays["logistic.std"], dtype=np.float32),
                ),
            )
        except KeyError as exc:
            raise ValueError(f"no fitted logistic baseline (missing {exc.args[0]})") from None


def _loss(x: Array, y: Array, w: Array, l2: float) -> float:
    z = x @ w
    per = np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))
    return float(per.mean() + 0.5 * l2 * np.dot(w[1:], w[1:]))


def fit_logistic(
    current: ArrayLike, y: ArrayLike, l2: float = 1e-3, max_iter: int = 50, tol: float = 1e-9
) -> LogisticModel:
    """Fit an L2-penalised logistic regression (intercept unpenalised) by damped Newton steps; deterministic.

    `l2` multiplies 0.5·|coef|² added to the mean cross-entropy, on standardised features.
    """
    raw = np.asarray(current, dtype=np.float64)
    labels = np.asarray(y, dtype=np.float64)
    if raw.ndim != 2 or labels.shape != (raw.shape[0],) or raw.shape[0] == 0:
        raise ValueError(f"need current features (N, F) and labels (N,), got {raw.shape} and {labels.shape}")
    norm = Normalisation.fit(raw)
    x = np.hstack([np.ones((raw.shape[0], 1)), norm.apply(raw).astype(np.float64)])
    n, k = x.shape
    penalty = np.full(k, l2)
    penalty[0] = 0.0
    w = np.zeros(k)
    base = np.clip(labels.mean(), 1e-6, 1 - 1e-6)
    w[0] = np.log(base / (1 - base))
    loss = _loss(x, labels, w, l2)
    for _ in range(max_iter):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - labels) / n + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x / n + np.diag(penalty) + 1e-9 * np.eye(k)
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while scale > 1e-4:  # halve the step until the loss does not rise (separable data)
            candidate = w - scale * step
            new_loss = _loss(x, labels, candidate, l2)
            if new_loss <= loss + 1e-12:
                break
            scale *= 0.5
        else:
            break
        w, improvement, loss = candidate, loss - new_loss, new_loss
        if improvement < tol:
            break
    return LogisticModel(coef=w[1:].copy(), intercept=float(w[0]), normalisation=norm)


def naive_scores(net_edge_bps: ArrayLike) -> NDArray[np.float64]:
    """Return the naive policy's belief: 1 (profitable) for every signal with positive net edge, else 0."""
    return (np.asarray(net_edge_bps, dtype=np.float64) > 0).astype(np.float64)
