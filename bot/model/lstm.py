"""A stacked LSTM in NumPy, laid out exactly like `torch.nn.LSTM` (gates i, f, g, o; same state-dict names).

How a step stays cheap (each NumPy call costs ~0.3 µs however small, so the step loop counts calls):

- Arrays are feature-major and batch-last, (rows, time, batch): each gate block of a step is a contiguous run of
  rows, and the weight gradient of a whole layer is a single GEMM over all steps.
- Each step is one GEMM of fused weights [W_ih | W_hh | b] (4H × (F + H + 1)) on the stacked column block
  [x_t; h_{t-1}; 1] (the row of ones carries the bias); the step writes h_t straight into the next block.
- Gate rows are reordered to (o, i, f, g) and followed by a slot holding c_{t-1}, so the three sigmoid gates are
  contiguous, and [i; f] * [g; c_{t-1}] is one multiply. The sigmoid rows of the fused weights are pre-scaled by
  1/2, so one `tanh` activates all gates: sigmoid(z) = (1 + tanh(z / 2)) / 2, and halving is exact.
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


def _steps(rows: Array) -> list[Array]:
    """Return the per-step views rows[:, t, :] of a (rows, time, batch) array."""
    return list(rows.transpose(1, 0, 2))


@dataclass
class _LayerCache:
    """What one layer's forward pass keeps for backpropagation; arrays are (rows, time, batch)."""

    stack: Array  # (F + H + 1, T + 1, B): column t is [x_t; h_{t-1}; 1]; the h rows of column T hold h_{T-1}
    acts: Array  # (5H, T + 1, B): gate activations (o, i, f, g) at t, then c_{t-1}; column T holds only c_{T-1}
    tcs: Array  # (H, T, B) tanh of the cell states
    mask: Array | None  # (F, T, B) inverted-dropout mask applied to the layer's input, or None
    w_ih: Array  # (4H, F) the input weights the pass used, internal order, unscaled
    w_hh_t: Array  # (H, 4H) the recurrent weights the pass used, internal order, unscaled, transposed


@dataclass
class LSTMCache:
    """Everything `LSTM.backward` needs from `LSTM.forward_train`."""

    batch_first_shape: tuple[int, int, int]
    layers: list[_LayerCache] = field(default_factory=list)


@dataclass
class _Fused:
    """One layer's fused step weights, with the parameter bytes they were built from."""

    weights: Array  # (4H, F + H + 1), internal order, sigmoid rows halved
    source: tuple[bytes, ...]


@dataclass
class _Plan:
    """Reusable buffers and per-step views for `forward` at one (batch, time) shape."""

    stacks: list[Array]  # per layer (F + H + 1, T + 1, B)
    gates: Array  # (5H, B): (o, i, f, g) of the current step, then c_{t-1}
    products: Array  # (2H, B): [i * g; f * c_{t-1}]
    tanh_c: Array  # (H, B)
    inputs: list[list[Array]]  # per layer, per step: the stacked column block
    hiddens: list[list[Array]]  # per layer, per step: where h_t goes


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
        # Inference state reused across `forward` calls: fresh arrays cost a page fault per 4 KiB, and building
        # the per-step views costs as much as the steps' arithmetic at batch 1. Not thread-safe: one LSTM per thread.
        self._fused: list[_Fused | None] = [None] * num_layers
        self._plan: _Plan | None = None
        self._half = np.array(0.5, dtype=self.dtype)  # a 0-d array: a Python float costs a conversion per call

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
        x = self._check_input(x)
        batch, time, _ = x.shape
        plan = self._plan
        if (
            plan is None
            or plan.gates.shape[1] != batch
            or len(plan.inputs[0]) != time
            or plan.gates.dtype != self.dtype
        ):
            plan = self._plan = self._make_plan(batch, time)
            self._half = np.array(0.5, dtype=self.dtype)
        hidden, features = self.hidden_size, self.input_size
        stack = plan.stacks[0]
        np.copyto(stack[:features, :time], x.transpose(2, 1, 0))
        for k in range(self.num_layers):
            if k:
                below = plan.stacks[k - 1]
                np.copyto(plan.stacks[k][:hidden, :time], below[-1 - hidden : -1, 1:])
            self._steps_inference(self._weights(k), plan, k)
        top = plan.stacks[-1]
        return np.ascontiguousarray(top[-1 - hidden : -1, 1:].transpose(2, 1, 0))

    def _check_input(self, x: Array) -> Array:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[1] < 1:
            raise ValueError(f"x must have shape (batch, time >= 1, {self.input_size}), got {x.shape}")
        return x

    def _make_plan(self, batch: int, time: int) -> _Plan:
        hidden = self.hidden_size
        stacks = []
        for k in range(self.num_layers):
            stack = self._new_stack(k, batch, time)
            stacks.append(stack)
        gates = np.zeros((5 * hidden, batch), dtype=self.dtype)
        return _Plan(
            stacks=stacks,
            gates=gates,
            products=np.empty((2 * hidden, batch), dtype=self.dtype),
            tanh_c=np.empty((hidden, batch), dtype=self.dtype),
            inputs=[_steps(stack[:, :time]) for stack in stacks],
            hiddens=[_steps(stack[-1 - hidden : -1, 1:]) for stack in stacks],
        )

    def _new_stack(self, k: int, batch: int, time: int) -> Array:
        """Return a (F + H + 1, T + 1, B) stack with h_{-1} = 0 and the row of ones set; the x rows are unset."""
        features = self.input_size if k == 0 else self.hidden_size
        stack = np.empty((features + self.hidden_size + 1, time + 1, batch), dtype=self.dtype)
        stack[features:, 0] = 0
        stack[-1] = 1
        return stack

    def _weights(self, k: int) -> Array:
        """Return layer `k`'s fused step weights, rebuilt when any of its parameters changed (compared by bytes)."""
        source = tuple(self.params[f"{kind}_l{k}"].tobytes() for kind in _KINDS)
        cached = self._fused[k]
        if cached is None or cached.source != source or cached.weights.dtype != self.dtype:
            cached = self._fused[k] = _Fused(self._fuse(k), source)
        return cached.weights

    def _fuse(self, k: int) -> Array:
        """Build layer `k`'s fused step weights [W_ih | W_hh | b_ih + b_hh], internal order, sigmoid rows halved."""
        w_ih, w_hh = self.params[f"weight_ih_l{k}"], self.params[f"weight_hh_l{k}"]
        bias = self.params[f"bias_ih_l{k}"] + self.params[f"bias_hh_l{k}"]
        fused = np.concatenate([w_ih, w_hh, bias[:, None]], axis=1)[self._order].astype(self.dtype)
        fused[: 3 * self.hidden_size] *= 0.5
        return fused

    def _steps_inference(self, weights: Array, plan: _Plan, k: int) -> None:
        """Run layer `k` over its stack in `plan`: 8 NumPy calls per step, all on preallocated arrays."""
        hidden = self.hidden_size
        gates = plan.gates
        four, sig, i_f, g_c = gates[: 4 * hidden], gates[: 3 * hidden], gates[hidden : 3 * hidden], gates[3 * hidden :]
        cell, out_gate = gates[4 * hidden :], gates[:hidden]
        products, tanh_c = plan.products, plan.tanh_c
        ig, fc = products[:hidden], products[hidden:]
        half = self._half
        dot, tanh, multiply, add = np.dot, np.tanh, np.multiply, np.add
        cell[...] = 0
        for column, h in zip(plan.inputs[k], plan.hiddens[k], strict=True):
            dot(weights, column, out=four)
            tanh(four, out=four)
            multiply(sig, half, out=sig)
            add(sig, half, out=sig)
            multiply(i_f, g_c, out=products)
            add(ig, fc, out=cell)
            tanh(cell, out=tanh_c)
            multiply(out_gate, tanh_c, out=h)

    def forward_train(
        self, x: Array, dropout: float = 0.0, rng: np.random.Generator | None = None
    ) -> tuple[Array, LSTMCache]:
        """Run forward keeping what `backward` needs; `dropout` (inverted) applies between layers only."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout > 0.0 and rng is None:
            raise ValueError("dropout needs an rng")
        x = self._check_input(x)
        batch, time, _ = x.shape
        hidden = self.hidden_size
        cache = LSTMCache(batch_first_shape=(batch, time, self.input_size))
        below: Array | None = None
        for k in range(self.num_layers):
            stack = self._new_stack(k, batch, time)
            features = stack.shape[0] - hidden - 1
            mask = None
            if below is None:
                np.copyto(stack[:features, :time], x.transpose(2, 1, 0))
            elif dropout > 0.0 and rng is not None:
                keep = rng.random(below.shape) >= dropout
                mask = keep.astype(self.dtype) / self.dtype.type(1.0 - dropout)
                np.multiply(below, mask, out=stack[:features, :time])
            else:
                np.copyto(stack[:features, :time], below)
            layer = self._layer_train(k, stack, mask)
            cache.layers.append(layer)
            below = stack[-1 - hidden : -1, 1:]
        top = cache.layers[-1].stack[-1 - hidden : -1, 1:]
        return np.ascontiguousarray(top.transpose(2, 1, 0)), cache

    def _layer_train(self, k: int, stack: Array, mask: Array | None) -> _LayerCache:
        """Run layer `k` over `stack` keeping every step's activations; the weights are fused afresh."""
        hidden = self.hidden_size
        _, columns, batch = stack.shape
        time = columns - 1
        weights = self._fuse(k)
        acts = np.empty((5 * hidden, time + 1, batch), dtype=self.dtype)
        acts[4 * hidden :, 0] = 0
        tcs = np.empty((hidden, time, batch), dtype=self.dtype)
        products = np.empty((2 * hidden, batch), dtype=self.dtype)
        ig, fc = products[:hidden], products[hidden:]
        half = np.array(0.5, dtype=self.dtype)
        matmul, tanh, multiply, add = np.matmul, np.tanh, np.multiply, np.add
        steps = zip(
            _steps(stack[:, :time]),
            _steps(acts[: 4 * hidden, :time]),
            _steps(acts[: 3 * hidden, :time]),
            _steps(acts[hidden : 3 * hidden, :time]),
            _steps(acts[3 * hidden :, :time]),
            _steps(acts[4 * hidden :, 1:]),
            _steps(acts[:hidden, :time]),
            _steps(tcs),
            _steps(stack[-1 - hidden : -1, 1:]),
            strict=True,
        )
        for column, four, sig, i_f, g_c, cell, out_gate, tanh_c, h in steps:  # 8 NumPy calls per step
            matmul(weights, column, out=four)
            tanh(four, out=four)
            multiply(sig, half, out=sig)
            add(sig, half, out=sig)
            multiply(i_f, g_c, out=products)
            add(ig, fc, out=cell)
            tanh(cell, out=tanh_c)
            multiply(out_gate, tanh_c, out=h)
        w_ih = self.params[f"weight_ih_l{k}"][self._order].astype(self.dtype)
        w_hh_t = np.ascontiguousarray(self.params[f"weight_hh_l{k}"][self._order].T, dtype=self.dtype)
        return _LayerCache(stack=stack, acts=acts, tcs=tcs, mask=mask, w_ih=w_ih, w_hh_t=w_hh_t)

    def backward(self, cache: LSTMCache, d_outputs: Array) -> tuple[dict[str, Array], Array]:
        """Backpropagate through time: return gradients named like `state_dict` and the gradient w.r.t. x."""
        batch, time, _ = cache.batch_first_shape
        hidden = self.hidden_size
        expected = (batch, time, hidden)
        if d_outputs.shape != expected:
            raise ValueError(f"d_outputs must have shape {expected}, got {d_outputs.shape}")
        d_h = np.ascontiguousarray(np.asarray(d_outputs).transpose(2, 1, 0), dtype=self.dtype)
        grads: dict[str, Array] = {}
        for k in reversed(range(self.num_layers)):
            layer = cache.layers[k]
            d_z = self._layer_backward(d_h, layer).reshape(4 * hidden, time * batch)
            features = layer.w_ih.shape[1]
            columns = layer.stack[:, :time].reshape(-1, time * batch)
            d_w = (d_z @ columns.T)[self._inverse]  # all steps' [W_ih | W_hh | b] gradients in one GEMM
            grads[f"weight_ih_l{k}"] = np.ascontiguousarray(d_w[:, :features])
            grads[f"weight_hh_l{k}"] = np.ascontiguousarray(d_w[:, features:-1])
            grads[f"bias_ih_l{k}"] = d_w[:, -1].copy()
            grads[f"bias_hh_l{k}"] = d_w[:, -1].copy()
            d_h = (layer.w_ih.T @ d_z).reshape(features, time, batch)
            if layer.mask is not None:
                d_h *= layer.mask
        ordered = {name: grads[name] for name in self.params}
        return ordered, np.ascontiguousarray(d_h.transpose(2, 1, 0))

    def _layer_backward(self, d_out: Array, layer: _LayerCache) -> Array:
        """Return the gradient w.r.t. one layer's gate pre-activations (4H, T, B), internal order (o, i, f, g)."""
        hidden, time, batch = d_out.shape
        acts, tcs = layer.acts, layer.tcs
        dtype = acts.dtype
        # Local multipliers, vectorised over all steps: dz_o = dh * L_o and dz_{i,f,g} = dc * L_{i,f,g}.
        sig = acts[: 3 * hidden, :time]
        slope = sig * (1 - sig)  # sigmoid'(z) for o, i, f
        local = np.empty((4, hidden, time, batch), dtype=dtype)
        np.multiply(slope[:hidden], tcs, out=local[0])
        gate_in = acts[3 * hidden :, :time].reshape(2, hidden, time, batch)  # [g; c_{t-1}]
        np.multiply(slope[hidden:].reshape(2, hidden, time, batch), gate_in, out=local[1:3])
        g = acts[3 * hidden : 4 * hidden, :time]
        np.multiply(acts[hidden : 2 * hidden, :time], 1 - g * g, out=local[3])
        # carry[:, t] = [d c_t / d h_t; f_{t+1}]: one multiply and one add take (dh, dc_{t+1}) to dc_t.
        carry = np.empty((2 * hidden, time, batch), dtype=dtype)
        np.multiply(acts[:hidden, :time], 1 - tcs * tcs, out=carry[:hidden])
        carry[hidden:, : time - 1] = acts[2 * hidden : 3 * hidden, 1:time]
        carry[hidden:, time - 1] = 0
        d_z = np.empty((4, hidden, time, batch), dtype=dtype)
        d_flat = d_z.reshape(4 * hidden, time, batch)
        w_hh_t = layer.w_hh_t
        both = np.zeros((2 * hidden, batch), dtype=dtype)  # [dh_t; dc_t], dc_T = 0
        dh, dc = both[:hidden], both[hidden:]
        dc3 = dc[None]
        terms = np.empty((2 * hidden, batch), dtype=dtype)
        term_h, term_c = terms[:hidden], terms[hidden:]
        dh_next = np.zeros((hidden, batch), dtype=dtype)
        add, multiply, dot = np.add, np.multiply, np.dot
        steps = zip(
            _steps(d_out),
            _steps(carry),
            _steps(local[0]),
            list(local[1:].transpose(2, 0, 1, 3)),
            _steps(d_z[0]),
            list(d_z[1:].transpose(2, 0, 1, 3)),
            _steps(d_flat),
            strict=True,
        )
        for d_out_t, carry_t, local_o, local_ifg, dz_o, dz_ifg, dz_t in reversed(list(steps)):  # 6 calls per step
            add(d_out_t, dh_next, out=dh)
            multiply(both, carry_t, out=terms)
            add(term_h, term_c, out=dc)
            multiply(dh, local_o, out=dz_o)
            multiply(local_ifg, dc3, out=dz_ifg)
            dot(w_hh_t, dz_t, out=dh_next)
        return d_flat
