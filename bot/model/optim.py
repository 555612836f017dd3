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
    """Adam (Kingma & Ba) with bias-corrected moments, updating the given arrays in place."""

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
        self._m = {name: np.zeros_like(p) for name, p in params.items()}
        self._v = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, grads: dict[str, Array]) -> None:
        """Apply one update; `grads` must name exactly the optimiser's parameters."""
        if grads.keys() != self.params.keys():
            raise ValueError(f"gradient names differ from parameter names: {sorted(grads.keys() ^ self.params.keys())}")
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.steps)
        root_correction = np.sqrt(1 - b2**self.steps)
        for name, p in self.params.items():
            g, m, v = grads[name], self._m[name], self._v[name]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= step_size * m / (np.sqrt(v) / root_correction + self.eps)
        if self._on_step is not None:
            self._on_step()
