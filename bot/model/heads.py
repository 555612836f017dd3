"""Output heads on the LSTM's last hidden state, and their combined training loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

Array = NDArray[Any]

HEAD_NAMES = ("p_profitable", "lifetime_log_ms", "edge_bps")
_CLASSIFIERS = frozenset({"p_profitable"})


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
        batch = h_last.shape[0]
        total = 0.0
        grads: dict[str, Array] = {}
        d_h = np.zeros_like(h_last)
        bounds = lower_bounds or {}
        if not set(bounds) <= set(HEAD_NAMES) - _CLASSIFIERS:
            raise ValueError(f"lower bounds apply to regression heads only, got {sorted(bounds)}")
        for name in HEAD_NAMES:
            w = weights.get(name, 0.0)
            weight = self.params[f"head.{name}.weight"]
            if w == 0.0:
                grads[f"head.{name}.weight"] = np.zeros_like(weight)
                grads[f"head.{name}.bias"] = np.zeros_like(self.params[f"head.{name}.bias"])
                continue
            y = np.asarray(targets[name], dtype=h_last.dtype)
            z = self._linear(name, h_last)
            if name in _CLASSIFIERS:
                # Cross-entropy with logits, stable form: softplus(z) - y * z.
                per = np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))
                dz = _sigmoid(z) - y
            else:
                r = z - y
                if name in bounds:
                    r = np.where(np.asarray(bounds[name], dtype=bool), np.minimum(r, 0.0), r)
                small = np.abs(r) <= huber_delta
                per = np.where(small, 0.5 * r * r, huber_delta * (np.abs(r) - 0.5 * huber_delta))
                dz = np.clip(r, -huber_delta, huber_delta)
            total += w * float(per.mean())
            dz = (w / batch) * dz
            grads[f"head.{name}.weight"] = (dz @ h_last)[None, :]
            grads[f"head.{name}.bias"] = np.array([dz.sum()], dtype=h_last.dtype)
            d_h += dz[:, None] * weight
        return total, grads, d_h
