"""Adam with bias correction, and global gradient-norm clipping, over named NumPy parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def clip_grad_norm(grads: dict[str, Array], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most `max_norm`; return the norm before."""
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    coef = max_norm / (total + 1e-6)  # the 1e-6 is PyTorch's, so clipped norms match
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return total


class Adam:
    """Adam (Kingma & Ba) with bias-corrected moments, updating the given arrays in place.

    The moments live in one flat array per parameter dtype, so a step costs a dozen NumPy calls however many
    parameters there are (per-parameter updates cost ~10 small calls each: 5-8% of a training step at H=32).
    """

    def __init__(
        self,
        params: dict[str, Array],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        on_step: Callable[[], object] | None = None,
    ) -> None:
        """Track first and second moments for every named parameter; call `on_step` after each update (a model
        that caches what it builds from its parameters, such as `LSTM.parameters_changed`)."""
        if lr <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or eps <= 0:
            raise ValueError("need lr > 0, betas in [0, 1) and eps > 0")
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = 0
        self._on_step = on_step
        by_dtype: dict[np.dtype[Any], list[str]] = {}
        for name, p in params.items():
            by_dtype.setdefault(p.dtype, []).append(name)
        self._groups = [_FlatGroup(names, [params[name] for name in names]) for names in by_dtype.values()]

    def step(self, grads: dict[str, Array]) -> None:
        """Apply one update; `grads` must name exactly the optimiser's parameters."""
        if grads.keys() != self.params.keys():
            raise ValueError(f"gradient names differ from parameter names: {sorted(grads.keys() ^ self.params.keys())}")
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.steps)
        root_correction = np.sqrt(1 - b2**self.steps)
        for group in self._groups:
            g, m, v = group.gather(grads), group.m, group.v
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            group.apply(self.params, step_size * m / (np.sqrt(v) / root_correction + self.eps))
        if self._on_step is not None:
            self._on_step()


class _FlatGroup:
    """Parameters of one dtype, with their gradients and Adam moments laid end to end."""

    def __init__(self, names: list[str], params: list[Array]) -> None:
        self.names = names
        self.shapes = [p.shape for p in params]
        sizes = [p.size for p in params]
        self.bounds = list(zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist(), strict=True))
        dtype = params[0].dtype
        self.m = np.zeros(sum(sizes), dtype=dtype)
        self.v = np.zeros(sum(sizes), dtype=dtype)
        self._grad = np.empty(sum(sizes), dtype=dtype)

    def gather(self, grads: dict[str, Array]) -> Array:
        """Return the group's gradients as one flat array (shapes must match the parameters')."""
        for name, shape, (start, stop) in zip(self.names, self.shapes, self.bounds, strict=True):
            g = grads[name]
            if g.shape != shape:
                raise ValueError(f"gradient {name} has shape {g.shape}, parameter has {shape}")
            self._grad[start:stop] = g.reshape(-1)
        return self._grad

    def apply(self, params: dict[str, Array], flat_update: Array) -> None:
        """Subtract a flat update from the named parameters, in place (looked up afresh: they may be rebound)."""
        for name, shape, (start, stop) in zip(self.names, self.shapes, self.bounds, strict=True):
            p = params[name]
            if p.shape != shape:
                raise ValueError(f"parameter {name} changed shape from {shape} to {p.shape}")
            p -= flat_update[start:stop].reshape(shape)
