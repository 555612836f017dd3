"""A stacked LSTM in NumPy, laid out exactly like `torch.nn.LSTM` (gates i, f, g, o; same state-dict names).

Internally each layer's gate rows are reordered to (o, i, f, g) so the three sigmoid gates are contiguous and the
three gates driven by the cell gradient (i, f, g) are contiguous too; the sigmoid rows are pre-scaled by 1/2 so one
`tanh` over all four gates gives every activation (sigmoid(z) = (1 + tanh(z / 2)) / 2, and halving is exact).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

Array = NDArray[Any]

_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)$")
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _internal_order(hidden: int) -> NDArray[np.intp]:
    """Return row indices taking torch's (i, f, g, o) gate blocks to the internal (o, i, f, g) order."""
    blocks = [np.arange(j * hidden, (j + 1) * hidden) for j in (3, 0, 1, 2)]
    return np.concatenate(blocks)


@dataclass
class _LayerCache:
    """What one layer's forward pass keeps for backpropagation (all time-major)."""

    inputs: Array  # (T, B, F) the layer's input, after dropout
    acts: Array  # (T, B, 4H) gate activations, internal order (o, i, f, g)
    hs: Array  # (T + 1, B, H) hidden states, hs[0] = 0
    cs: Array  # (T + 1, B, H) cell states, cs[0] = 0
    tcs: Array  # (T, B, H) tanh of the cell states
    mask: Array | None  # (T, B, F) inverted-dropout mask applied to `inputs`, or None


@dataclass
class LSTMCache:
    """Everything `LSTM.backward` needs from `LSTM.forward_train`."""

    batch_first_shape: tuple[int, int, int]
    layers: list[_LayerCache] = field(default_factory=list)


class LSTM:
    """A stacked LSTM whose parameters are a `torch.nn.LSTM` state dict (zero initial states, batch first)."""

    def __init__(self, params: dict[str, Array], input_size: int, hidden_size: int, num_layers: int) -> None:
        """Wrap already validated parameters; use `init` or `from_state_dict` instead."""
        self.params = params
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self._order = _internal_order(hidden_size)
        self._inverse = np.argsort(self._order)
        # Scratch arrays reused across calls: fresh large arrays cost a page fault per 4 KiB on every call,
        # which doubled the forward time. Not thread-safe: use one LSTM per thread.
        self._scratch: dict[str, Array] = {}

    def _buffer(self, key: str, shape: tuple[int, ...]) -> Array:
        """Return a reusable uninitialised array for `key`, reallocating only when the shape or dtype changes."""
        buf = self._scratch.get(key)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = np.empty(shape, dtype=self.dtype)
            self._scratch[key] = buf
        return buf

    def _array(self, key: str, shape: tuple[int, ...], reuse: bool) -> Array:
        """Return scratch space when `reuse`, else a fresh array (kept by a training cache)."""
        return self._buffer(key, shape) if reuse else np.empty(shape, dtype=self.dtype)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Return the floating dtype of the parameters and outputs."""
        return self.params["weight_ih_l0"].dtype

    @classmethod
    def init(
        cls,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        rng: np.random.Generator | None = None,
        dtype: DTypeLike = np.float32,
    ) -> LSTM:
        """Create an LSTM initialised like PyTorch: every parameter uniform in (-1/sqrt(H), 1/sqrt(H))."""
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must all be at least 1")
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / np.sqrt(hidden_size)
        params: dict[str, Array] = {}
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            shapes = {
                "weight_ih": (4 * hidden_size, fan_in),
                "weight_hh": (4 * hidden_size, hidden_size),
                "bias_ih": (4 * hidden_size,),
                "bias_hh": (4 * hidden_size,),
            }
            for kind in _KINDS:
                params[f"{kind}_l{k}"] = rng.uniform(-bound, bound, shapes[kind]).astype(dtype)
        return cls(params, input_size, hidden_size, num_layers)

    @classmethod
    def from_state_dict(cls, state: dict[str, Array], dtype: DTypeLike = np.float32) -> LSTM:
        """Build an LSTM from a `torch.nn.LSTM` state dict (arrays), inferring sizes and checking every shape."""
        if not np.issubdtype(np.dtype(dtype), np.floating):
            raise ValueError(f"dtype must be a floating type, got {np.dtype(dtype)}")
        layers: set[int] = set()
        for name in state:
            match = _NAME.match(name)
            if match is None:
                raise ValueError(f"unexpected key {name!r} in LSTM state dict")
            layers.add(int(match.group(2)))
        if not layers:
            raise ValueError("empty LSTM state dict")
        num_layers = max(layers) + 1
        missing = [f"{kind}_l{k}" for k in range(num_layers) for kind in _KINDS if f"{kind}_l{k}" not in state]
        if missing:
            raise ValueError(f"missing keys in LSTM state dict: {', '.join(missing)}")
        arrays = {name: np.asarray(value) for name, value in state.items()}
        first = arrays["weight_ih_l0"]
        if first.ndim != 2 or first.shape[0] % 4 or first.shape[0] == 0:
            raise ValueError(f"weight_ih_l0 must have shape (4*H, F), got {first.shape}")
        hidden, input_size = first.shape[0] // 4, first.shape[1]
        params: dict[str, Array] = {}
        for k in range(num_layers):
            expected = {
                "weight_ih": (4 * hidden, input_size if k == 0 else hidden),
                "weight_hh": (4 * hidden, hidden),
                "bias_ih": (4 * hidden,),
                "bias_hh": (4 * hidden,),
            }
            for kind in _KINDS:
                name = f"{kind}_l{k}"
                if arrays[name].shape != expected[kind]:
                    raise ValueError(f"{name} must have shape {expected[kind]} (H={hidden}), got {arrays[name].shape}")
                params[name] = np.array(arrays[name], dtype=dtype)
        return cls(params, input_size, hidden, num_layers)

    def state_dict(self) -> dict[str, Array]:
        """Return copies of the parameters under `torch.nn.LSTM` state-dict names and shapes."""
        return {name: value.copy() for name, value in self.params.items()}

    def forward(self, x: Array) -> Array:
        """Return the top layer's outputs (batch, time, hidden) for inputs (batch, time, features)."""
        outputs, _ = self._forward(x, 0.0, None, reuse=True)
        return outputs

    def forward_train(
        self, x: Array, dropout: float = 0.0, rng: np.random.Generator | None = None
    ) -> tuple[Array, LSTMCache]:
        """Run forward keeping what `backward` needs; `dropout` (inverted) applies between layers only."""
        return self._forward(x, dropout, rng, reuse=False)

    def _forward(
        self, x: Array, dropout: float, rng: np.random.Generator | None, reuse: bool
    ) -> tuple[Array, LSTMCache]:
        """Run all layers; with `reuse` the intermediate arrays are scratch space, so the cache is not kept."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout > 0.0 and rng is None:
            raise ValueError("dropout needs an rng")
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[1] < 1:
            raise ValueError(f"x must have shape (batch, time >= 1, {self.input_size}), got {x.shape}")
        batch, time, _ = x.shape
        cache = LSTMCache(batch_first_shape=(batch, time, self.input_size))
        layer_in = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=self.dtype)
        for k in range(self.num_layers):
            mask = None
            if k > 0 and dropout > 0.0 and rng is not None:
                keep = rng.random(layer_in.shape) >= dropout
                mask = keep.astype(self.dtype) / self.dtype.type(1.0 - dropout)
                layer_in = layer_in * mask
            layer = self._layer_forward(k, layer_in, mask, reuse)
            if not reuse:
                cache.layers.append(layer)
            layer_in = layer.hs[1:]
        return layer_in.transpose(1, 0, 2).copy(), cache  # a copy: layer_in may be scratch space

    def _layer_forward(self, k: int, xs: Array, mask: Array | None, reuse: bool) -> _LayerCache:
        """Run layer `k` over time-major inputs: one GEMM for all input projections, then one GEMM per step."""
        hidden = self.hidden_size
        h3 = 3 * hidden
        time, batch, features = xs.shape
        scale = np.ones(4 * hidden, dtype=self.dtype)
        scale[:h3] = 0.5  # sigmoid rows: sigmoid(z) = (1 + tanh(z / 2)) / 2
        shift = np.zeros(4 * hidden, dtype=self.dtype)
        shift[:h3] = 0.5
        w_ih = self.params[f"weight_ih_l{k}"][self._order] * scale[:, None]
        w_hh_t = np.ascontiguousarray((self.params[f"weight_hh_l{k}"][self._order] * scale[:, None]).T)
        bias = (self.params[f"bias_ih_l{k}"] + self.params[f"bias_hh_l{k}"])[self._order] * scale
        acts = self._array(f"acts{k}", (time, batch, 4 * hidden), reuse)
        np.matmul(xs.reshape(time * batch, features), w_ih.T, out=acts.reshape(time * batch, 4 * hidden))
        acts += bias
        hs = self._array(f"hs{k}", (time + 1, batch, hidden), reuse)
        cs = self._array(f"cs{k}", (time + 1, batch, hidden), reuse)
        hs[0] = 0
        cs[0] = 0
        tcs = self._array(f"tcs{k}", (time, batch, hidden), reuse)
        rec = self._buffer("rec", (batch, 4 * hidden))
        ig = self._buffer("ig", (batch, hidden))
        for t in range(time):  # 10 NumPy calls per step (8 on the first)
            gates = acts[t]
            if t:  # h_0 = 0: the first step has no recurrent term
                np.matmul(hs[t], w_hh_t, out=rec)
                np.add(gates, rec, out=gates)
            np.tanh(gates, out=gates)
            np.multiply(gates, scale, out=gates)  # full rows with a broadcast row beat strided slices
            np.add(gates, shift, out=gates)
            c = cs[t + 1]
            np.multiply(gates[:, 2 * hidden : h3], cs[t], out=c)  # f * c_prev
            np.multiply(gates[:, hidden : 2 * hidden], gates[:, h3:], out=ig)  # i * g
            np.add(c, ig, out=c)
            np.tanh(c, out=tcs[t])
            np.multiply(gates[:, :hidden], tcs[t], out=hs[t + 1])  # o * tanh(c)
        return _LayerCache(inputs=xs, acts=acts, hs=hs, cs=cs, tcs=tcs, mask=mask)

    def backward(self, cache: LSTMCache, d_outputs: Array) -> tuple[dict[str, Array], Array]:
        """Backpropagate through time: return gradients named like `state_dict` and the gradient w.r.t. x."""
        batch, time, _ = cache.batch_first_shape
        expected = (batch, time, self.hidden_size)
        if d_outputs.shape != expected:
            raise ValueError(f"d_outputs must have shape {expected}, got {d_outputs.shape}")
        d_h = np.ascontiguousarray(d_outputs.transpose(1, 0, 2), dtype=self.dtype)
        grads: dict[str, Array] = {}
        for k in reversed(range(self.num_layers)):
            layer = cache.layers[k]
            w_ih = self.params[f"weight_ih_l{k}"][self._order]
            w_hh = self.params[f"weight_hh_l{k}"][self._order]
            d_z = self._layer_backward(d_h, layer, w_hh)
            four_h = 4 * self.hidden_size
            flat = d_z.reshape(time * batch, four_h)
            inputs = layer.inputs.reshape(time * batch, -1)
            grads[f"weight_ih_l{k}"] = (flat.T @ inputs)[self._inverse]
            prev_h = layer.hs[1:time].reshape((time - 1) * batch, self.hidden_size)
            grads[f"weight_hh_l{k}"] = (flat[batch:].T @ prev_h)[self._inverse]
            d_bias = flat.sum(axis=0)[self._inverse]
            grads[f"bias_ih_l{k}"] = d_bias
            grads[f"bias_hh_l{k}"] = d_bias.copy()
            d_h = (flat @ w_ih).reshape(time, batch, -1)
            if layer.mask is not None:
                d_h *= layer.mask
        ordered = {name: grads[name] for name in self.params}
        return ordered, np.ascontiguousarray(d_h.transpose(1, 0, 2))

    def _layer_backward(self, d_out: Array, layer: _LayerCache, w_hh: Array) -> Array:
        """Return the gradient w.r.t. one layer's gate pre-activations (T, B, 4H), internal order (o, i, f, g)."""
        time, batch, hidden = d_out.shape
        h3 = 3 * hidden
        acts, tcs = layer.acts, layer.tcs
        o, i, f, g = (acts[..., j * hidden : (j + 1) * hidden] for j in range(4))
        # Local multipliers, vectorised over all steps: dz_o = dh * P_o and dz_{i,f,g} = dc * P_{i,f,g}.
        local = self._buffer("local", acts.shape)
        local[..., :hidden] = tcs * o * (1 - o)
        local[..., hidden : 2 * hidden] = g * i * (1 - i)
        local[..., 2 * hidden : h3] = layer.cs[:-1] * f * (1 - f)
        local[..., h3:] = i * (1 - g * g)
        dc_dh = o * (1 - tcs * tcs)  # d c_t / d h_t through h_t = o * tanh(c_t)
        d_z = self._buffer("d_z", acts.shape)
        dh = self._buffer("dh", (batch, hidden))
        dh_next = np.zeros((batch, hidden), dtype=acts.dtype)
        dc = self._buffer("dc", (batch, hidden))
        dc_next = np.zeros((batch, hidden), dtype=acts.dtype)
        for t in reversed(range(time)):  # 7 NumPy calls per step
            np.add(d_out[t], dh_next, out=dh)
            np.multiply(dh, dc_dh[t], out=dc)
            np.add(dc, dc_next, out=dc)
            dz_t = d_z[t]
            np.multiply(dh, local[t, :, :hidden], out=dz_t[:, :hidden])
            np.multiply(
                local[t, :, hidden:].reshape(batch, 3, hidden),
                dc[:, None, :],
                out=dz_t[:, hidden:].reshape(batch, 3, hidden),
            )
            np.multiply(dc, f[t], out=dc_next)
            np.matmul(dz_t, w_hh, out=dh_next)
        return d_z
