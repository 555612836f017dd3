"""Baselines: logistic regression recovers known coefficients, round-trips through arrays; normalisation is robust."""

from __future__ import annotations

import numpy as np
import pytest

from bot.model.baselines import LogisticModel, fit_logistic, naive_scores
from bot.model.normalise import Normalisation, TargetScale


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    mean, std = np.array([5.0, -2.0, 0.0]), np.array([2.0, 0.5, 1.0])
    x = mean + std * rng.standard_normal((n, 3))
    beta, b0 = np.array([0.8, -2.0, 0.0]), -0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-(b0 + x @ beta)))).astype(np.float32)
    return x, y, beta, b0


def test_logistic_recovers_known_coefficients() -> None:
    x, y, beta, b0 = _synthetic(40_000, 1)
    model = fit_logistic(x, y, l2=1e-8)
    # Coefficients live on the standardised scale: beta_j * std_j, intercept absorbs beta · mean.
    std = model.normalisation.std.astype(np.float64)
    mean = model.normalisation.mean.astype(np.float64)
    assert model.coef / std == pytest.approx(beta, abs=0.06)
    assert model.intercept - float(model.coef @ (mean / std)) == pytest.approx(b0, abs=0.3)
    p = model.predict(x)
    true_p = 1 / (1 + np.exp(-(b0 + x @ beta)))
    assert np.abs(p - true_p).mean() < 0.01
    assert abs(p.mean() - y.mean()) < 0.01  # calibrated in the large


def test_logistic_is_deterministic_and_round_trips() -> None:
    x, y, _, _ = _synthetic(2_000, 2)
    a, b = fit_logistic(x, y), fit_logistic(x, y)
    assert np.array_equal(a.coef, b.coef)
    again = LogisticModel.from_arrays(a.to_arrays())
    assert np.allclose(again.predict(x[:50]), a.predict(x[:50]))


def test_logistic_on_separable_data_stays_finite() -> None:
    x = np.linspace(-1, 1, 200)[:, None]
    y = (x[:, 0] > 0).astype(np.float32)
    model = fit_logistic(x, y, l2=1e-3)
    assert np.all(np.isfinite(model.coef))
    assert model.predict(np.array([[0.9], [-0.9]])).tolist() == pytest.approx([1.0, 0.0], abs=0.05)


def test_missing_logistic_arrays_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no fitted logistic baseline"):
        LogisticModel.from_arrays({})


def test_naive_acts_on_positive_edge() -> None:
    assert naive_scores([1.0, 0.0, -2.0]).tolist() == [1.0, 0.0, 0.0]


def test_normalisation_handles_constant_outliers_and_nan() -> None:
    rows = np.zeros((1000, 3))
    rows[:, 1] = np.random.default_rng(0).standard_normal(1000)
    rows[0, 1] = 1e9  # one spike must not set the scale
    rows[:, 2] = 7.0  # constant
    norm = Normalisation.fit(rows)
    assert norm.std[2] == 1.0
    assert 0.5 < norm.std[1] < 2.0
    z = norm.apply(np.array([[np.nan, 1e9, 7.0], [np.inf, -np.inf, -1e9]]))
    assert z.tolist() == [[0.0, 10.0, 0.0], [10.0, -10.0, -10.0]]
    assert Normalisation.from_meta(norm.to_meta()).apply(rows[:5]).tolist() == norm.apply(rows[:5]).tolist()


def test_target_scale_round_trips() -> None:
    y = np.random.default_rng(3).exponential(5.0, 500)
    scale = TargetScale.fit(y)
    assert np.allclose(scale.decode(scale.encode(y)), y, rtol=1e-5, atol=1e-5)
    assert abs(float(np.median(scale.encode(y)))) < 0.01
