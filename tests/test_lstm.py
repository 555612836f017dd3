"""The NumPy LSTM, its heads and Adam: exact gradients, PyTorch's layout and outputs, and that it learns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bot.model import HEAD_NAMES, LSTM, Adam, Heads, clip_grad_norm, last_step_grad

Array = NDArray[Any]


def _rel_err(analytic: Array, numeric: Array) -> Array:
    """Return the elementwise relative error |a - n| / max(|a| + |n|, 1e-8)."""
    return np.asarray(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-8))


def _targets() -> dict[str, Array]:
    # Huber residuals stay far from the kink at |r| = delta = 1 (the outputs are small): edge_bps has one
    # sample on each branch, so both are checked.
    return {
        "p_profitable": np.array([1.0, 0.0]),
        "lifetime_log_ms": np.array([0.3, -0.2]),
        "edge_bps": np.array([4.0, 0.1]),
    }


def _central_diff(loss: Any, tensor: Array, step: float = 1e-3) -> Array:
    """Return d loss / d tensor by the fourth-order central difference, element by element (in place, restored).

    The five-point stencil's truncation error is O(step**4), so a step of 1e-3 keeps both it and rounding
    (~1e-16 / step) near 1e-13: the plain two-point stencil cannot reach 1e-6 relative on small gradients.
    """
    numeric = np.zeros_like(tensor)
    for idx in np.ndindex(tensor.shape):  # every element: the tensors are small
        saved = tensor[idx]
        values = []
        for k in (2, 1, -1, -2):
            tensor[idx] = saved + k * step
            values.append(loss())
        tensor[idx] = saved
        numeric[idx] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
    return numeric


WEIGHTS = {"p_profitable": 1.0, "lifetime_log_ms": 0.5, "edge_bps": 0.25}


def _total_loss(
    model: LSTM, heads: Heads, x: Array, targets: dict[str, Array], bounds: dict[str, Array] | None = None
) -> float:
    model.parameters_changed()  # the central difference writes the parameters in place
    loss, _, _ = heads.loss(model.forward(x)[:, -1], targets, WEIGHTS, lower_bounds=bounds)
    return loss


@pytest.mark.parametrize("censored", [False, True])
def test_gradients_match_central_differences(censored: bool) -> None:
    rng = np.random.default_rng(7)
    model = LSTM.init(3, 4, 2, rng, np.float64)
    heads = Heads.init(4, rng, np.float64)
    x = rng.normal(size=(2, 5, 3))
    targets = _targets()
    bounds = None
    if censored:
        # Censored lifetimes are lower bounds: the first (0.8) lies above its prediction (~0.31) and costs the
        # shortfall, the second (0.1) below its prediction (~0.34) and costs nothing.
        targets["lifetime_log_ms"] = np.array([0.8, 0.1])
        bounds = {"lifetime_log_ms": np.array([True, True])}

    outputs, cache = model.forward_train(x)
    loss, head_grads, d_last = heads.loss(outputs[:, -1], targets, WEIGHTS, lower_bounds=bounds)
    grads, d_x = model.backward(cache, last_step_grad(d_last, 5))
    predicted = heads.predict(outputs[:, -1])
    assert np.abs(predicted["edge_bps"]).max() < 0.5  # residuals ~ -4 and ~ 0: both branches
    if censored:
        lifetime = predicted["lifetime_log_ms"]
        assert lifetime[0] < 0.8 - 0.1 and lifetime[1] > 0.1 + 0.1  # both sides of a bound, away from its kink
        assert grads["weight_ih_l0"].any()
    assert loss == pytest.approx(_total_loss(model, heads, x, targets, bounds), rel=1e-12)
    assert list(grads) == list(model.state_dict())

    analytic = {**grads, **head_grads, "x": d_x}
    tensors = {**model.params, **heads.params, "x": x}
    worst = {}
    for name, tensor in tensors.items():
        numeric = _central_diff(lambda: _total_loss(model, heads, x, targets, bounds), tensor)
        worst[name] = float(_rel_err(analytic[name], numeric).max())
    print("max relative error per tensor:", {name: f"{err:.1e}" for name, err in worst.items()})
    assert set(worst) == {*model.params, *heads.params, "x"}
    assert max(worst.values()) < 1e-6, worst


def test_dropout_gradients_match_central_differences_with_fixed_mask() -> None:
    rng = np.random.default_rng(3)
    model = LSTM.init(3, 4, 3, rng, np.float64)
    x = rng.normal(size=(2, 4, 3))
    w = rng.normal(size=(2, 4, 4))
    outputs, cache = model.forward_train(x, dropout=0.4, rng=np.random.default_rng(11))
    grads, _ = model.backward(cache, w)

    def loss() -> float:
        out, _ = model.forward_train(x, dropout=0.4, rng=np.random.default_rng(11))  # same mask
        return float((out * w).sum())

    assert float((outputs * w).sum()) == pytest.approx(loss(), rel=1e-12)
    assert any(layer.mask is not None and (layer.mask == 0).any() for layer in cache.layers)
    for name in ("weight_hh_l0", "weight_ih_l1", "bias_ih_l2"):
        numeric = _central_diff(loss, model.params[name])
        assert _rel_err(grads[name], numeric).max() < 1e-6, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_last_step_gives_backward_s_parameter_gradients(dtype: Any) -> None:
    rng = np.random.default_rng(5)
    model = LSTM.init(3, 4, 3, rng, dtype)
    x = rng.normal(size=(6, 7, 3)).astype(dtype)
    d_last = rng.normal(size=(6, 4)).astype(dtype)
    _, cache = model.forward_train(x, dropout=0.3, rng=np.random.default_rng(2))
    full, _ = model.backward(cache, last_step_grad(d_last, 7))
    # The scratch buffers now hold the full pass's values: the last-step pass must not read them.
    model._scratch["d_top"].fill(np.nan)
    last = model.backward_last_step(cache, d_last)
    assert list(last) == list(full)
    for name, grad in full.items():
        assert grad.any(), name
        np.testing.assert_array_equal(last[name], grad, err_msg=name)
    with pytest.raises(ValueError, match="d_last must have shape"):
        model.backward_last_step(cache, d_last[:, :3])


def test_hand_computed_steps_pin_gate_order() -> None:
    # H = F = 1, W_hh = 0, x = 1 at both steps, so every step sees the same pre-activations:
    # z_i = 0.5, z_f = -1.0 + 0.5 = -0.5 (bias_hh), z_g = 2.0, z_o = 0.25 + 0.5 = 0.75 (bias_ih).
    state = {
        "weight_ih_l0": np.array([[0.5], [-1.0], [2.0], [0.25]]),
        "weight_hh_l0": np.zeros((4, 1)),
        "bias_ih_l0": np.array([0.0, 0.0, 0.0, 0.5]),
        "bias_hh_l0": np.array([0.0, 0.5, 0.0, 0.0]),
    }
    model = LSTM.from_state_dict(state, dtype=np.float64)
    out = model.forward(np.ones((1, 2, 1)))

    def sigmoid(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    i, f, g, o = sigmoid(0.5), sigmoid(-0.5), math.tanh(2.0), sigmoid(0.75)
    assert (i, f, g, o) == pytest.approx(
        (0.6224593312018546, 0.3775406687981454, 0.9640275800758169, 0.679178699175393)
    )
    c1 = i * g  # c_0 = 0, so f does not matter yet
    h1 = o * math.tanh(c1)
    c2 = f * c1 + i * g  # f enters here: swapping any two gates changes h2
    h2 = o * math.tanh(c2)
    assert (c1, h1) == pytest.approx((0.6000679627541353, 0.36478547072230877))
    assert (c2, h2) == pytest.approx((0.8266180227366722, 0.4609286065143351))
    assert out[0, :, 0] == pytest.approx([h1, h2], rel=1e-14)


def test_state_dict_round_trip_and_dtypes() -> None:
    rng = np.random.default_rng(1)
    model = LSTM.init(5, 6, 3, rng)
    state = model.state_dict()
    assert model.dtype == np.float32
    shapes = {name: value.shape for name, value in state.items()}
    assert shapes["weight_ih_l0"] == (24, 5)
    assert shapes["weight_ih_l2"] == (24, 6)
    assert shapes["weight_hh_l1"] == (24, 6)
    assert shapes["bias_ih_l2"] == shapes["bias_hh_l2"] == (24,)
    assert len(state) == 12

    again = LSTM.from_state_dict(state)
    assert (again.input_size, again.hidden_size, again.num_layers) == (5, 6, 3)
    for name, value in again.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
    state["weight_ih_l0"][0, 0] += 1.0  # a copy: the model is unchanged
    assert again.params["weight_ih_l0"][0, 0] != state["weight_ih_l0"][0, 0]

    x = rng.normal(size=(4, 7, 5))
    out32 = again.forward(x)
    assert out32.dtype == np.float32
    assert out32.shape == (4, 7, 6)
    wide = LSTM.from_state_dict(model.state_dict(), dtype=np.float64)
    out64 = wide.forward(x)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out32, out64, atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("bias_hh_l1"), "missing keys.*bias_hh_l1"),
        (lambda s: s.update(extra=np.zeros(1)), "unexpected key 'extra'"),
        (lambda s: s.update(weight_hh_l0=np.zeros((16, 5))), r"weight_hh_l0 must have shape \(16, 4\)"),
        (lambda s: s.update(weight_ih_l1=np.zeros((16, 3))), r"weight_ih_l1 must have shape \(16, 4\)"),
        (lambda s: s.update(bias_ih_l0=np.zeros(12)), r"bias_ih_l0 must have shape \(16,\)"),
        (lambda s: s.update(weight_ih_l0=np.zeros((15, 3))), r"weight_ih_l0 must have shape \(4\*H, F\)"),
        (lambda s: s.clear(), "empty"),
    ],
)
def test_state_dict_validation(mutate: Any, message: str) -> None:
    state = LSTM.init(3, 4, 2, np.random.default_rng(0)).state_dict()
    mutate(state)
    with pytest.raises(ValueError, match=message):
        LSTM.from_state_dict(state)


def test_input_and_dropout_validation() -> None:
    model = LSTM.init(3, 4, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time >= 1, 3\)"):
        model.forward(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="dropout needs an rng"):
        model.forward_train(np.zeros((2, 5, 3)), dropout=0.5)
    with pytest.raises(ValueError, match="dropout must be in"):
        model.forward_train(np.zeros((2, 5, 3)), dropout=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="missing head parameter"):
        Heads({}, 4)


def test_clip_grad_norm_and_adam_first_step() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    assert math.hypot(grads["a"][0], grads["b"][0, 0]) == pytest.approx(1.0, rel=1e-5)
    params = {"a": np.array([1.0, 1.0])}
    Adam(params, lr=0.1).step({"a": np.array([2.0, -0.5])})  # bias-corrected first step: -lr * sign(g)
    np.testing.assert_allclose(params["a"], [0.9, 1.1], rtol=1e-6)


def test_adam_steps_every_parameter_as_the_textbook_update_does_across_dtypes() -> None:
    rng = np.random.default_rng(3)
    shapes = {"w": ((4, 3), np.float32), "b": ((4,), np.float32), "v": ((2, 2), np.float64), "s": ((1,), np.float32)}
    params = {name: rng.normal(size=shape).astype(dtype) for name, (shape, dtype) in shapes.items()}
    reference = {name: p.astype(np.float64) for name, p in params.items()}
    moments = {name: (np.zeros(p.shape), np.zeros(p.shape)) for name, p in params.items()}
    adam = Adam(params, lr=0.01, betas=(0.8, 0.95))
    for step in range(1, 6):
        grads = {name: rng.normal(size=p.shape).astype(p.dtype) for name, p in params.items()}
        adam.step(grads)
        for name, g in grads.items():
            m, v = moments[name]
            m[...] = 0.8 * m + 0.2 * g
            v[...] = 0.95 * v + 0.05 * g.astype(np.float64) ** 2
            reference[name] -= 0.01 * (m / (1 - 0.8**step)) / (np.sqrt(v / (1 - 0.95**step)) + 1e-8)
    for name, p in params.items():
        assert p.dtype == shapes[name][1]
        np.testing.assert_allclose(p, reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="gradient w has shape"):
        adam.step({name: np.zeros(3) if name == "w" else np.zeros(p.shape) for name, p in params.items()})


def test_learns_sign_of_sum() -> None:
    rng = np.random.default_rng(42)
    model = LSTM.init(1, 8, 1, rng, np.float64)
    heads = Heads.init(8, rng, np.float64)
    params = {**model.params, **heads.params}
    adam = Adam(params, lr=0.02, on_step=model.parameters_changed)
    only_p = {"p_profitable": 1.0}

    def batch(n: int) -> tuple[Array, dict[str, Array]]:
        x = rng.normal(size=(n, 10, 1))
        return x, {"p_profitable": (x.sum(axis=(1, 2)) > 0).astype(np.float64)}

    x_test, y_test = batch(256)
    first, _, _ = heads.loss(model.forward(x_test)[:, -1], y_test, only_p)
    for _ in range(300):
        x, y = batch(32)
        out, cache = model.forward_train(x)
        _, head_grads, d_last = heads.loss(out[:, -1], y, only_p)
        grads, _ = model.backward(cache, last_step_grad(d_last, 10))
        all_grads = {**grads, **head_grads}
        clip_grad_norm(all_grads, 1.0)
        adam.step(all_grads)
    last, _, _ = heads.loss(model.forward(x_test)[:, -1], y_test, only_p)
    accuracy = ((heads.predict(model.forward(x_test)[:, -1])["p_profitable"] > 0.5) == y_test["p_profitable"]).mean()
    assert first > 0.6
    assert last < 0.25 * first
    assert accuracy > 0.93


def test_a_censored_target_is_a_lower_bound_by_hand() -> None:
    heads = Heads.init(2, np.random.default_rng(0), np.float64)
    heads.params["head.lifetime_log_ms.weight"][...] = 0.0
    heads.params["head.lifetime_log_ms.bias"][...] = 1.0  # predicts 1.0 for every sample
    h = np.ones((3, 2))
    targets = {"lifetime_log_ms": np.array([0.5, 1.5, 3.0])}
    bounds = {"lifetime_log_ms": np.array([True, True, False])}
    loss, grads, _ = heads.loss(h, targets, {"lifetime_log_ms": 1.0}, lower_bounds=bounds)
    # Censored at 0.5 and predicted 1.0: no loss. Censored at 1.5: the 0.5 shortfall, 0.5 * 0.5². Exact 3.0: the
    # Huber tail, 2 - 0.5.
    assert loss == pytest.approx((0.0 + 0.125 + 1.5) / 3)
    assert grads["head.lifetime_log_ms.bias"][0] == pytest.approx((0.0 - 0.5 - 1.0) / 3)
    for name in HEAD_NAMES:  # heads of weight 0 (their targets absent) learn nothing
        assert grads[f"head.{name}.weight"].shape == (1, 2) and grads[f"head.{name}.bias"].shape == (1,)
        assert grads[f"head.{name}.weight"].any() == (name == "lifetime_log_ms")
    exact, _, _ = heads.loss(h, targets, {"lifetime_log_ms": 1.0})
    assert exact == pytest.approx((0.125 + 0.125 + 1.5) / 3)
    with pytest.raises(ValueError, match="regression heads"):
        heads.loss(h, {**targets, "p_profitable": np.ones(3)}, lower_bounds={"p_profitable": np.ones(3, bool)})


def test_heads_predict_shapes() -> None:
    heads = Heads.init(4, np.random.default_rng(0))
    out = heads.predict(np.zeros((3, 4), dtype=np.float32))
    assert list(out) == list(HEAD_NAMES)
    assert all(v.shape == (3,) for v in out.values())
    assert ((out["p_profitable"] > 0) & (out["p_profitable"] < 1)).all()


def _torch_pair(torch: Any, dtype: Any, seed: int) -> tuple[Any, LSTM]:
    torch.manual_seed(seed)
    reference = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True).to(dtype)
    state = {name: value.detach().numpy() for name, value in reference.state_dict().items()}
    return reference, LSTM.from_state_dict(state, dtype=np.float64 if dtype == torch.float64 else np.float32)


@pytest.mark.parametrize(("precision", "atol"), [("float32", 1e-5), ("float64", 1e-10)])
def test_forward_matches_torch(precision: str, atol: float) -> None:
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, precision)
    reference, model = _torch_pair(torch, dtype, seed=5)
    x = np.random.default_rng(5).normal(size=(3, 9, 6)).astype(precision)
    with torch.no_grad():
        expected, _ = reference(torch.from_numpy(x))
    out = model.forward(x)
    assert out.dtype == np.dtype(precision)
    np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=atol)

    # And the other way: our weights into torch.
    ours = LSTM.init(6, 5, 2, np.random.default_rng(9), np.dtype(precision))
    reference.load_state_dict({name: torch.from_numpy(value) for name, value in ours.state_dict().items()})
    with torch.no_grad():
        expected, _ = reference(torch.from_numpy(x))
    np.testing.assert_allclose(ours.forward(x), expected.numpy(), rtol=0, atol=atol)


def test_gradients_match_torch() -> None:
    torch = pytest.importorskip("torch")
    reference, model = _torch_pair(torch, torch.float64, seed=8)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 7, 6))
    w = rng.normal(size=(4, 7, 5))
    x_t = torch.from_numpy(x).requires_grad_()
    out_t, _ = reference(x_t)
    (out_t * torch.from_numpy(w)).sum().backward()
    out, cache = model.forward_train(x)
    grads, d_x = model.backward(cache, w)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=1e-12)
    for name, param in reference.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(d_x, x_t.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_forward_results_survive_later_calls() -> None:
    model = LSTM.init(2, 3, 2, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for batch in (1, 4):
        first_x, second_x = rng.normal(size=(2, batch, 6, 2))
        first = model.forward(first_x)
        kept = first.copy()
        model.forward(second_x)
        np.testing.assert_array_equal(first, kept)
        train_out, _ = model.forward_train(first_x)
        np.testing.assert_allclose(train_out, kept, rtol=1e-6)


def test_forward_uses_parameters_announced_as_changed() -> None:
    # forward caches fused weights: an in-place update and a replaced array are both seen once announced.
    rng = np.random.default_rng(4)
    model = LSTM.init(3, 4, 2, rng, np.float64)
    x = rng.normal(size=(2, 5, 3))
    before = model.forward(x)
    for name, value in model.params.items():
        value += 0.1 * rng.normal(size=value.shape)
        model.parameters_changed()
        after = model.forward(x)
        fresh = LSTM.from_state_dict(model.state_dict(), dtype=np.float64).forward(x)
        np.testing.assert_array_equal(after, fresh, err_msg=name)
        assert not np.allclose(after, before), name
        before = after
    model.params["bias_hh_l1"] = model.params["bias_hh_l1"] + 1.0
    model.parameters_changed()
    np.testing.assert_array_equal(
        model.forward(x), LSTM.from_state_dict(model.state_dict(), dtype=np.float64).forward(x)
    )


def test_load_state_dict_writes_in_place_and_forward_sees_it() -> None:
    rng = np.random.default_rng(8)
    model = LSTM.init(3, 4, 2, rng, np.float64)
    other = LSTM.init(3, 4, 2, np.random.default_rng(9), np.float64)
    x = rng.normal(size=(2, 5, 3))
    before = model.forward(x)
    arrays = dict(model.params)
    model.load_state_dict(other.state_dict())
    assert all(model.params[name] is array for name, array in arrays.items())  # an optimiser's arrays stay valid
    np.testing.assert_array_equal(model.forward(x), other.forward(x))
    assert not np.allclose(model.forward(x), before)
    with pytest.raises(ValueError, match="weight_hh_l1"):
        model.load_state_dict({k: v for k, v in other.state_dict().items() if k != "weight_hh_l1"})
    with pytest.raises(ValueError, match="shape"):
        model.load_state_dict({**other.state_dict(), "bias_ih_l0": np.zeros(3)})


def test_adam_steps_reach_forward_and_forward_train() -> None:
    rng = np.random.default_rng(6)
    model = LSTM.init(3, 4, 1, rng)
    x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    adam = Adam(model.params, lr=0.05, on_step=model.parameters_changed)
    for _ in range(3):
        out, cache = model.forward_train(x)
        np.testing.assert_allclose(model.forward(x), out, rtol=1e-6)
        grads, _ = model.backward(cache, np.ones_like(out))
        adam.step(grads)
        np.testing.assert_allclose(model.forward(x), model.forward_train(x)[0], rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 64])
def test_batch_sizes_agree_with_one_sample_at_a_time(batch: int) -> None:
    rng = np.random.default_rng(batch)
    model = LSTM.init(12, 8, 2, rng, np.float64)
    x = rng.normal(size=(batch, 7, 12))
    together = model.forward(x)
    alone = np.concatenate([model.forward(x[b : b + 1]) for b in range(batch)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-14)
    train_out, _ = model.forward_train(x)
    np.testing.assert_allclose(train_out, together, rtol=0, atol=1e-14)
