"""A stacked LSTM in NumPy, laid out exactly like `torch.nn.LSTM` (gates i, f, g, o; same state-dict names).

How a step stays cheap (each NumPy call costs ~0.3 µs however small, so the step loop counts calls):

- Arrays are time-major and batch-last, (time, rows, batch): a step's rows are one contiguous block, and so is each
  gate's; strided per-step views cost up to twice as much in GEMMs and element-wise calls.
- Each step is one GEMM of fused weights [W_ih | W_hh | b] (4H × (F + H + 1)) on the stacked block
  [x_t; h_{t-1}; 1] (the row of ones carries the bias); the step writes h_t straight into the next step's block.
- Gate rows are reordered to (o, i, f, g) and followed by a slot holding c_{t-1}, so the three sigmoid gates are
  contiguous, and [i; f] * [g; c_{t-1}] is one multiply. The sigmoid rows of the fused weights are pre-scaled by
  1/2, so one `tanh` activates all gates: sigmoid(z) = (1 + tanh(z / 2)) / 2, and halving is exact.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
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


def _copy_out(hiddens: Array) -> Array:
    """Return a copy of time-major hidden states (T, H, B) viewed as (B, T, H), keeping their memory order.

    A C-ordered (B, T, H) copy gathers 4-byte elements across the batch stride and costs ~10x more (a tenth of a
    B=64 forward); a caller that needs C order can ask for it.
    """
    return hiddens.transpose(2, 0, 1).copy(order="K")


@dataclass
class _LayerCache:
    """What one layer's forward pass keeps for backpropagation; arrays are (time, rows, batch)."""

    stack: Array  # (T + 1, F + H + 1, B): stack[t] = [x_t; h_{t-1}; 1]; of stack[T] only the h rows are set
    acts: Array  # (T + 1, 5H, B): gate activations (o, i, f, g) at t, then c_{t-1}; of acts[T] only c_{T-1}
    tcs: Array  # (T, H, B) tanh of the cell states
    mask: Array | None  # (T, F, B) inverted-dropout mask applied to the layer's input, or None
    w_ih: Array  # (4H, F) the input weights the pass used, internal order, unscaled
    w_hh_t: Array  # (H, 4H) the recurrent weights the pass used, internal order, unscaled, transposed


@dataclass
class LSTMCache:
    """Everything `LSTM.backward` needs from `LSTM.forward_train`."""

    batch_first_shape: tuple[int, int, int]
    layers: list[_LayerCache] = field(default_factory=list)


@dataclass
class _Fused:
    """One layer's fused step weights, with the parameter version they were built from."""

    weights: Array  # (4H, F + H + 1), internal order, sigmoid rows halved
    version: int


_MAX_PLANS = 16
"""Inference plans kept per LSTM (one per batch and window shape seen)."""


@dataclass
class _Plan:
    """Reusable buffers and per-step views for `forward` at one (batch, time) shape."""

    stacks: list[Array]  # per layer (T + 1, F + H + 1, B)
    gates: Array  # (5H, B): (o, i, f, g) of the current step, then c_{t-1}
    products: Array  # (2H, B): [i * g; f * c_{t-1}]
    tanh_c: Array  # (H, B)
    inputs: list[list[Array]]  # per layer, per step: the stacked block [x_t; h_{t-1}; 1]
    hiddens: list[list[Array]]  # per layer, per step: where h_t goes


class LSTM:
    """A stacked LSTM whose parameters are a `torch.nn.LSTM` state dict (zero initial states, batch first).

    `forward` caches weights built from the parameters: change them through `load_state_dict` or an optimiser
    that calls `parameters_changed` (as `Adam(..., on_step=lstm.parameters_changed)` does), or call
    `parameters_changed` yourself after writing to `params`.
    """

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
        self._version = 0
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._half = np.array(0.5, dtype=self.dtype)  # a 0-d array: a Python float costs a conversion per call
        # Fresh arrays of this size cost a page fault per 4 KiB touched (~1.5 µs each here: more than the
        # arithmetic), so `backward` works in scratch arrays and training caches hand theirs back when collected.
        self._scratch: dict[str, Array] = {}
        self._spare: dict[tuple[int, ...], list[Array]] = {}

    def _buffer(self, key: str, shape: tuple[int, ...]) -> Array:
        """Return a reusable uninitialised array for `key`, reallocating only when the shape or dtype changes."""
        buf = self._scratch.get(key)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = self._scratch[key] = np.empty(shape, dtype=self.dtype)
        return buf

    def _take(self, shape: tuple[int, ...]) -> Array:
        """Return an uninitialised array for a training cache: one a collected cache gave back, or a new one."""
        spares = self._spare.get(shape)
        while spares:
            array = spares.pop()
            if array.dtype == self.dtype:
                return array
        return np.empty(shape, dtype=self.dtype)

    def _give_back(self, arrays: list[Array]) -> None:
        for array in arrays:
            spares = self._spare.setdefault(array.shape, [])
            if len(spares) < 2:
                spares.append(array)

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

    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Copy `state` (every parameter, same names and shapes) into the parameters, in place."""
        if state.keys() != self.params.keys():
            raise ValueError(f"state names differ from the parameters': {sorted(state.keys() ^ self.params.keys())}")
        for name, value in state.items():
            target = self.params[name]
            if np.shape(value) != target.shape:
                raise ValueError(f"{name} must have shape {target.shape}, got {np.shape(value)}")
        for name, value in state.items():
            np.copyto(self.params[name], value, casting="same_kind")
        self.parameters_changed()

    def parameters_changed(self) -> None:
        """Note that parameters were changed in place or replaced: the next `forward` rebuilds its weights."""
        self._version += 1

    def forward(self, x: Array) -> Array:
        """Return the top layer's outputs (batch, time, hidden) for inputs (batch, time, features).

        The array is a fresh copy laid out time-major in memory (not C-contiguous); `np.ascontiguousarray` it if
        C order matters.
        """
        x = self._check_input(x)
        batch, time, features = x.shape
        # One plan per (batch, time): live scoring alternates small batch sizes, and rebuilding a plan costs
        # about as much as the forward itself.
        plan = self._plans.get((batch, time))
        if plan is None or plan.gates.dtype != self.dtype:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[(batch, time)] = self._make_plan(batch, time)
            self._half = np.array(0.5, dtype=self.dtype)
        hidden = self.hidden_size
        np.copyto(plan.stacks[0][:time, :features], x.transpose(1, 2, 0))
        for k in range(self.num_layers):
            if k:
                np.copyto(plan.stacks[k][:time, :hidden], plan.stacks[k - 1][1:, -1 - hidden : -1])
            self._steps_inference(self._weights(k), plan, k)
        return _copy_out(plan.stacks[-1][1:, -1 - hidden : -1])

    def _empty(self, shape: tuple[int, ...]) -> Array:
        return np.empty(shape, dtype=self.dtype)

    def _check_input(self, x: Array) -> Array:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[1] < 1:
            raise ValueError(f"x must have shape (batch, time >= 1, {self.input_size}), got {x.shape}")
        return x

    def _make_plan(self, batch: int, time: int) -> _Plan:
        hidden = self.hidden_size
        stacks = [self._new_stack(k, batch, time, self._empty) for k in range(self.num_layers)]
        return _Plan(
            stacks=stacks,
            gates=np.zeros((5 * hidden, batch), dtype=self.dtype),
            products=np.empty((2 * hidden, batch), dtype=self.dtype),
            tanh_c=np.empty((hidden, batch), dtype=self.dtype),
            inputs=[list(stack[:time]) for stack in stacks],
            hiddens=[list(stack[1:, -1 - hidden : -1]) for stack in stacks],
        )

    def _new_stack(self, k: int, batch: int, time: int, empty: Callable[[tuple[int, ...]], Array]) -> Array:
        """Return a (T + 1, F + H + 1, B) stack with h_{-1} = 0 and the row of ones set; the x rows are unset."""
        features = self.input_size if k == 0 else self.hidden_size
        stack = empty((time + 1, features + self.hidden_size + 1, batch))
        stack[0, features:] = 0
        stack[:, -1] = 1
        return stack

    def _weights(self, k: int) -> Array:
        """Return layer `k`'s fused step weights, rebuilt when the parameters changed (see `parameters_changed`)."""
        cached = self._fused[k]
        if cached is None or cached.version != self._version or cached.weights.dtype != self.dtype:
            cached = self._fused[k] = _Fused(self._fuse(k), self._version)
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
        # `out` goes positionally: the keyword costs ~0.04 µs a call, 10% of a small call.
        for block, h in zip(plan.inputs[k], plan.hiddens[k], strict=True):
            dot(weights, block, four)
            tanh(four, four)
            multiply(sig, half, sig)
            add(sig, half, sig)
            multiply(i_f, g_c, products)
            add(ig, fc, cell)
            tanh(cell, tanh_c)
            multiply(out_gate, tanh_c, h)

    def forward_train(
        self, x: Array, dropout: float = 0.0, rng: np.random.Generator | None = None
    ) -> tuple[Array, LSTMCache]:
        """Run forward keeping what `backward` needs; `dropout` (inverted) applies between layers only."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout > 0.0 and rng is None:
            raise ValueError("dropout needs an rng")
        x = self._check_input(x)
        batch, time, features = x.shape
        hidden = self.hidden_size
        cache = LSTMCache(batch_first_shape=(batch, time, features))
        for k in range(self.num_layers):
            stack = self._new_stack(k, batch, time, self._take)
            mask = None
            if k == 0:
                np.copyto(stack[:time, :features], x.transpose(1, 2, 0))
            else:
                below = cache.layers[-1].stack[1:, -1 - hidden : -1]
                if dropout > 0.0 and rng is not None:
                    keep = rng.random(below.shape) >= dropout
                    mask = keep.astype(self.dtype) / self.dtype.type(1.0 - dropout)
                    np.multiply(below, mask, out=stack[:time, :hidden])
                else:
                    np.copyto(stack[:time, :hidden], below)
            cache.layers.append(self._layer_train(k, stack, mask))
        arrays = [array for layer in cache.layers for array in (layer.stack, layer.acts, layer.tcs)]
        weakref.finalize(cache, self._give_back, arrays)
        return _copy_out(cache.layers[-1].stack[1:, -1 - hidden : -1]), cache

    def _layer_train(self, k: int, stack: Array, mask: Array | None) -> _LayerCache:
        """Run layer `k` over `stack` keeping every step's activations; the weights are fused afresh."""
        hidden = self.hidden_size
        columns, _, batch = stack.shape
        time = columns - 1
        weights = self._fuse(k)
        acts = self._take((time + 1, 5 * hidden, batch))
        acts[0, 4 * hidden :] = 0
        tcs = self._take((time, hidden, batch))
        products = np.empty((2 * hidden, batch), dtype=self.dtype)
        ig, fc = products[:hidden], products[hidden:]
        half = np.array(0.5, dtype=self.dtype)
        dot, tanh, multiply, add = np.dot, np.tanh, np.multiply, np.add
        steps = zip(
            stack[:time],
            acts[:time, : 4 * hidden],
            acts[:time, : 3 * hidden],
            acts[:time, hidden : 3 * hidden],
            acts[:time, 3 * hidden :],
            acts[1:, 4 * hidden :],
            acts[:time, :hidden],
            tcs,
            stack[1:, -1 - hidden : -1],
            strict=True,
        )
        for block, four, sig, i_f, g_c, cell, out_gate, tanh_c, h in steps:  # 8 NumPy calls per step
            dot(weights, block, four)
            tanh(four, four)
            multiply(sig, half, sig)
            add(sig, half, sig)
            multiply(i_f, g_c, products)
            add(ig, fc, cell)
            tanh(cell, tanh_c)
            multiply(out_gate, tanh_c, h)
        w_ih = self.params[f"weight_ih_l{k}"][self._order].astype(self.dtype)
        w_hh_t = np.ascontiguousarray(self.params[f"weight_hh_l{k}"][self._order].T, dtype=self.dtype)
        return _LayerCache(stack=stack, acts=acts, tcs=tcs, mask=mask, w_ih=w_ih, w_hh_t=w_hh_t)

    def backward(self, cache: LSTMCache, d_outputs: Array) -> tuple[dict[str, Array], Array]:
        """Backpropagate through time: return gradients named like `state_dict` and the gradient w.r.t. x."""
        batch, time, _ = cache.batch_first_shape
        expected = (batch, time, self.hidden_size)
        if d_outputs.shape != expected:
            raise ValueError(f"d_outputs must have shape {expected}, got {d_outputs.shape}")
        d_top = self._buffer("d_top", (time, self.hidden_size, batch))
        np.copyto(d_top, np.asarray(d_outputs).transpose(1, 2, 0))
        grads, d_x = self._backward(cache, d_top, input_grad=True)
        assert d_x is not None
        return grads, np.ascontiguousarray(d_x.transpose(2, 0, 1))

    def backward_last_step(self, cache: LSTMCache, d_last: Array) -> dict[str, Array]:
        """Return the parameter gradients when only the last step's output has a gradient, `d_last` (batch, hidden).

        This is what training on the last hidden state needs: the same gradients as `backward` given
        `last_step_grad(d_last, time)`, without building that mostly-zero array (a fresh one costs a page fault
        per 4 KiB, ~8% of a training step) or the gradient w.r.t. x, which training does not use.
        """
        batch, time, _ = cache.batch_first_shape
        expected = (batch, self.hidden_size)
        if d_last.shape != expected:
            raise ValueError(f"d_last must have shape {expected}, got {d_last.shape}")
        d_top = self._buffer("d_top", (time, self.hidden_size, batch))
        d_top[:-1] = 0
        np.copyto(d_top[-1], np.asarray(d_last).T)
        grads, _ = self._backward(cache, d_top, input_grad=False)
        return grads

    def _backward(self, cache: LSTMCache, d_top: Array, input_grad: bool) -> tuple[dict[str, Array], Array | None]:
        """Backpropagate d_top (time, hidden, batch); the gradient w.r.t. x, time-major, only if `input_grad`."""
        batch, time, _ = cache.batch_first_shape
        hidden = self.hidden_size
        d_h = d_top
        grads: dict[str, Array] = {}
        for k in reversed(range(self.num_layers)):
            layer = cache.layers[k]
            d_z = self._layer_backward(d_h, layer)
            features = layer.w_ih.shape[1]
            # Per-step GEMMs summed over time beat one GEMM on time-merged copies of both operands.
            per_step = self._buffer("d_w_steps", (time, 4 * hidden, layer.stack.shape[1]))
            np.matmul(d_z, layer.stack[:time].transpose(0, 2, 1), out=per_step)
            d_w = per_step.sum(axis=0)[self._inverse]
            grads[f"weight_ih_l{k}"] = np.ascontiguousarray(d_w[:, :features])
            grads[f"weight_hh_l{k}"] = np.ascontiguousarray(d_w[:, features:-1])
            grads[f"bias_ih_l{k}"] = d_w[:, -1].copy()
            grads[f"bias_hh_l{k}"] = d_w[:, -1].copy()
            if k > 0 or input_grad:
                d_h = np.matmul(layer.w_ih.T, d_z, out=self._buffer(f"d_in{k}", (time, features, batch)))
                if layer.mask is not None:
                    d_h *= layer.mask
        ordered = {name: grads[name] for name in self.params}
        return ordered, d_h if input_grad else None

    def _layer_backward(self, d_out: Array, layer: _LayerCache) -> Array:
        """Return the gradient w.r.t. one layer's gate pre-activations (T, 4H, B), internal order (o, i, f, g)."""
        time, hidden, batch = d_out.shape
        acts, tcs = layer.acts[:time], layer.tcs
        dtype = acts.dtype
        # Local multipliers, vectorised over all steps: dz_o = dh * L_o and dz_{i,f,g} = dc * L_{i,f,g}.
        sig = acts[:, : 3 * hidden]
        slope = self._buffer("slope", sig.shape)
        np.subtract(1, sig, out=slope)
        np.multiply(slope, sig, out=slope)  # sigmoid'(z) for o, i, f
        local = self._buffer("local", (time, 4 * hidden, batch))
        np.multiply(slope[:, :hidden], tcs, out=local[:, :hidden])
        np.multiply(slope[:, hidden:], acts[:, 3 * hidden :], out=local[:, hidden : 3 * hidden])  # [g; c_{t-1}]
        square = self._buffer("square", tcs.shape)
        g = acts[:, 3 * hidden : 4 * hidden]
        np.multiply(g, g, out=square)
        np.subtract(1, square, out=square)
        np.multiply(acts[:, hidden : 2 * hidden], square, out=local[:, 3 * hidden :])
        # carry[t] = [d c_t / d h_t; f_{t+1}]: one multiply and one add take (dh_t, dc_{t+1}) to dc_t.
        carry = self._buffer("carry", (time, 2 * hidden, batch))
        np.multiply(tcs, tcs, out=square)
        np.subtract(1, square, out=square)
        np.multiply(acts[:, :hidden], square, out=carry[:, :hidden])
        carry[: time - 1, hidden:] = acts[1:, 2 * hidden : 3 * hidden]
        carry[time - 1, hidden:] = 0
        d_z = self._buffer("d_z", (time, 4 * hidden, batch))
        w_hh_t = layer.w_hh_t
        both = np.zeros((2 * hidden, batch), dtype=dtype)  # [dh_t; dc_t], dc_T = 0
        dh, dc = both[:hidden], both[hidden:]
        dc3 = dc[None]
        terms = np.empty((2 * hidden, batch), dtype=dtype)
        term_h, term_c = terms[:hidden], terms[hidden:]
        dh_next = np.zeros((hidden, batch), dtype=dtype)
        add, multiply, dot = np.add, np.multiply, np.dot
        steps = zip(
            d_out,
            carry,
            local[:, :hidden],
            local[:, hidden:].reshape(time, 3, hidden, batch),
            d_z[:, :hidden],
            d_z[:, hidden:].reshape(time, 3, hidden, batch),
            d_z,
            strict=True,
        )
        for d_out_t, carry_t, local_o, local_ifg, dz_o, dz_ifg, dz_t in reversed(list(steps)):  # 6 calls per step
            add(d_out_t, dh_next, dh)
            multiply(both, carry_t, terms)
            add(term_h, term_c, dc)
            multiply(dh, local_o, dz_o)
            multiply(local_ifg, dc3, dz_ifg)
            dot(w_hh_t, dz_t, dh_next)
        return d_z
