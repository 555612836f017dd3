"""Output heads on the LSTM's last hidden state, and their combined training loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

Array = NDArray[Any]

HEAD_NAMES = ("p_profitable", "lifetime_log_ms", "edge_bps")
_CLASSIFIERS = frozenset({"p_profitable"})
_REGRESSION_NAMES = tuple(name for name in HEAD_NAMES if name not in _CLASSIFIERS)
_COLUMNS = tuple(name for name in HEAD_NAMES if name in _CLASSIFIERS) + _REGRESSION_NAMES
"""`Heads.loss` works on one column per head: the classifiers, then the regression heads (slices, not lists)."""
_CLASSIFIER_COLUMNS = slice(0, len(HEAD_NAMES) - len(_REGRESSION_NAMES))
_REGRESSION_COLUMNS = slice(_CLASSIFIER_COLUMNS.stop, len(HEAD_NAMES))


def _sigmoid(z: Array) -> Array:
    """Return the logistic function of z without overflow."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def last_step_grad(d_h_last: Array, time: int) -> Array:
    """Return d_outputs (batch, time, hidden) for `LSTM.backward`: zeros except the last step."""
    batch, hidden = d_h_last.shape
    d_outputs = np.zeros((batch, time, hidden), dtype=d_h_last.dtype)
    d_outputs[:, -1] = d_h_last
    return d_outputs


class Heads:
    """Linear heads: `p_profitable` (sigmoid, binary cross-entropy); `lifetime_log_ms`, `edge_bps` (Huber)."""

    def __init__(self, params: dict[str, Array], hidden_size: int) -> None:
        """Wrap parameters named `head.{name}.weight` (1, H) and `head.{name}.bias` (1,)."""
        for name in HEAD_NAMES:
            for part, shape in (("weight", (1, hidden_size)), ("bias", (1,))):
                key = f"head.{name}.{part}"
                if key not in params:
                    raise ValueError(f"missing head parameter {key!r}")
                if params[key].shape != shape:
                    raise ValueError(f"{key} must have shape {shape}, got {params[key].shape}")
        self.params = params
        self.hidden_size = hidden_size

    @classmethod
    def init(cls, hidden_size: int, rng: np.random.Generator, dtype: DTypeLike = np.float32) -> Heads:
        """Create heads initialised like `torch.nn.Linear`: uniform in (-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / np.sqrt(hidden_size)
        params: dict[str, Array] = {}
        for name in HEAD_NAMES:
            params[f"head.{name}.weight"] = rng.uniform(-bound, bound, (1, hidden_size)).astype(dtype)
            params[f"head.{name}.bias"] = rng.uniform(-bound, bound, (1,)).astype(dtype)
        return cls(params, hidden_size)

    def _linear(self, name: str, h_last: Array) -> Array:
        """Return one head's pre-activation (batch,)."""
        weight, bias = self.params[f"head.{name}.weight"], self.params[f"head.{name}.bias"]
        return np.asarray((h_last @ weight.T)[:, 0] + bias[0])

    def predict(self, h_last: Array) -> dict[str, Array]:
        """Return each head's prediction (batch,): a probability for `p_profitable`, raw values otherwise."""
        out = {}
        for name in HEAD_NAMES:
            z = self._linear(name, h_last)
            out[name] = _sigmoid(z) if name in _CLASSIFIERS else z
        return out

    def loss(
        self,
        h_last: Array,
        targets: dict[str, Array],
        weights: dict[str, float] | None = None,
        huber_delta: float = 1.0,
        lower_bounds: Mapping[str, Array] | None = None,
    ) -> tuple[float, dict[str, Array], Array]:
        """Return the weighted sum of batch-mean losses, gradients w.r.t. head parameters, and d loss / d h_last.

        `lower_bounds` maps a regression head to a boolean mask (batch,) of targets that are only lower bounds
        (censored lifetimes): a prediction at or above such a target costs nothing, one below it pays Huber on
        the shortfall.
        """
        weights = weights if weights is not None else dict.fromkeys(HEAD_NAMES, 1.0)
        unknown = set(weights) - set(HEAD_NAMES)
        if unknown:
            raise ValueError(f"unknown heads in weights: {sorted(unknown)}")
        bounds = lower_bounds or {}
        if not set(bounds) <= set(HEAD_NAMES) - _CLASSIFIERS:
            raise ValueError(f"lower bounds apply to regression heads only, got {sorted(bounds)}")
        # All heads at once, one column each (a call per head and step would cost more than the arithmetic); a
        # head of weight 0 keeps a zero gradient and its targets are not read.
        batch, dtype = h_last.shape[0], h_last.dtype
        head_weights = np.array([weights.get(name, 0.0) for name in _COLUMNS], dtype=dtype)
        weight = np.concatenate([self.params[f"head.{name}.weight"] for name in _COLUMNS])  # (heads, H)
        bias = np.concatenate([self.params[f"head.{name}.bias"] for name in _COLUMNS])
        z = h_last @ weight.T + bias  # (batch, heads)
        y = np.zeros_like(z)
        for column, name in enumerate(_COLUMNS):
            if head_weights[column] != 0.0:
                y[:, column] = targets[name]
        per = np.empty_like(z)
        dz = np.empty_like(z)
        zc, yc = z[:, _CLASSIFIER_COLUMNS], y[:, _CLASSIFIER_COLUMNS]
        # Cross-entropy with logits, stable form: softplus(z) - y * z.
        per[:, _CLASSIFIER_COLUMNS] = np.maximum(zc, 0) - yc * zc + np.log1p(np.exp(-np.abs(zc)))
        dz[:, _CLASSIFIER_COLUMNS] = _sigmoid(zc) - yc
        r = z[:, _REGRESSION_COLUMNS] - y[:, _REGRESSION_COLUMNS]
        for name, censored in bounds.items():
            column = _REGRESSION_NAMES.index(name)  # within r
            np.minimum(r[:, column], 0.0, out=r[:, column], where=np.asarray(censored, dtype=bool))
        size = np.abs(r)
        per[:, _REGRESSION_COLUMNS] = np.where(
            size <= huber_delta, 0.5 * r * r, huber_delta * (size - 0.5 * huber_delta)
        )
        dz[:, _REGRESSION_COLUMNS] = np.clip(r, -huber_delta, huber_delta)
        total = float(per.mean(axis=0, dtype=np.float64) @ head_weights)
        dz *= head_weights / batch
        weight_grads, bias_grads = dz.T @ h_last, dz.sum(axis=0)
        grads: dict[str, Array] = {}
        for column, name in enumerate(_COLUMNS):
            grads[f"head.{name}.weight"] = weight_grads[column : column + 1].copy()
            grads[f"head.{name}.bias"] = bias_grads[column : column + 1].copy()
        d_h = dz @ weight
        return total, grads, d_h
