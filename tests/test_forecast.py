"""The spread-path forecaster: fitted parameters, interval coverage at the nominal level, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from bot.model.forecast import SpreadForecaster, coverage, fit_forecaster, without_padding


def _ar1_windows(rng: np.random.Generator, n: int, steps: int, mu: float, phi: float, noise: np.ndarray) -> np.ndarray:
    """Windows of an AR(1) path, each starting from the stationary distribution (noise: (n, steps) shocks)."""
    out = np.empty((n, steps))
    sd = np.std(noise) / np.sqrt(1 - phi * phi)
    out[:, 0] = mu + sd * rng.standard_normal(n)
    for t in range(1, steps):
        out[:, t] = mu + phi * (out[:, t - 1] - mu) + noise[:, t]
    return out


@pytest.mark.parametrize("tails", ["normal", "student3"])
@pytest.mark.parametrize("level", [0.5, 0.9])
def test_intervals_cover_held_out_paths_at_their_nominal_level(tails: str, level: float) -> None:
    rng = np.random.default_rng(11)

    def shocks(n: int) -> np.ndarray:
        if tails == "normal":
            return rng.normal(0.0, 1.5, (n, 32))
        return rng.standard_t(3, (n, 32))

    train = _ar1_windows(rng, 3_000, 32, 2.0, 0.8, shocks(3_000))
    test = _ar1_windows(rng, 3_000, 32, 2.0, 0.8, shocks(3_000))
    forecaster = fit_forecaster(train, horizon=8, level=level)

    assert forecaster.phi == pytest.approx(0.8, abs=0.03)
    assert forecaster.mu == pytest.approx(2.0, abs=0.3)
    measured = coverage(forecaster, test)
    assert measured["nominal"] == level
    assert len(measured["coverage_by_step"]) == 8
    for step_coverage in measured["coverage_by_step"]:
        assert step_coverage == pytest.approx(level, abs=0.03)
    # Intervals widen with the horizon as the mean path loses its grip.
    widths = forecaster.error_upper - forecaster.error_lower
    assert widths[-1] > widths[0]


def test_mean_path_decays_towards_the_mean() -> None:
    forecaster = SpreadForecaster(1.0, 0.5, 0.9, np.full(3, -1.0), np.full(3, 1.0))
    path = forecaster.forecast(np.array([5.0, 1.0]))
    np.testing.assert_allclose(path.mean, [[3.0, 2.0, 1.5], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(path.lower, path.mean - 1.0)
    np.testing.assert_allclose(path.upper, path.mean + 1.0)


def test_a_forecaster_fitted_on_calmer_data_undercovers_wilder_data() -> None:
    # Coverage is a measurement, not a constant: intervals from calm paths miss on volatile ones.
    rng = np.random.default_rng(3)
    calm = _ar1_windows(rng, 1_000, 24, 0.0, 0.7, rng.normal(0.0, 0.5, (1_000, 24)))
    wild = _ar1_windows(rng, 1_000, 24, 0.0, 0.7, rng.normal(0.0, 2.0, (1_000, 24)))
    forecaster = fit_forecaster(calm, horizon=4, level=0.9)
    assert coverage(forecaster, wild)["coverage"] < 0.6


def test_round_trip_through_arrays() -> None:
    rng = np.random.default_rng(5)
    forecaster = fit_forecaster(rng.normal(size=(50, 16)), horizon=5, level=0.8)
    again = SpreadForecaster.from_arrays(forecaster.to_arrays())
    assert again.horizon == 5
    np.testing.assert_array_equal(again.forecast(np.array([0.3])).upper, forecaster.forecast(np.array([0.3])).upper)


@pytest.mark.parametrize(
    ("series", "horizon", "level"),
    [(np.zeros((4, 8)), 8, 0.9), (np.zeros((4, 8)), 2, 1.0), (np.zeros(8), 2, 0.9), (np.full((2, 8), np.nan), 2, 0.9)],
)
def test_bad_input_is_refused(series: np.ndarray, horizon: int, level: float) -> None:
    with pytest.raises(ValueError):
        fit_forecaster(series, horizon=horizon, level=level)


def test_the_intervals_are_calibrated_on_windows_the_mean_path_was_not_fitted_on() -> None:
    # The later half is wilder than the earlier: in-sample quantiles would be the calm half's, split ones are not.
    rng = np.random.default_rng(9)
    calm = _ar1_windows(rng, 1_000, 24, 0.0, 0.7, rng.normal(0.0, 0.5, (1_000, 24)))
    wild = _ar1_windows(rng, 1_000, 24, 0.0, 0.7, rng.normal(0.0, 2.0, (1_000, 24)))
    forecaster = fit_forecaster(np.concatenate([calm, wild]), horizon=4, level=0.9)
    assert coverage(forecaster, wild)["coverage"] == pytest.approx(0.9, abs=0.03)


def test_without_padding_blanks_the_steps_before_each_windows_real_ones() -> None:
    series = np.arange(12.0).reshape(3, 4)
    blanked = without_padding(series, np.array([4, 1, 2]))
    np.testing.assert_array_equal(np.isnan(blanked), [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(blanked[~np.isnan(blanked)], [0, 1, 2, 3, 7, 10, 11])
    assert not np.isnan(series).any()  # a copy
    # Blanked steps are no points of coverage either: only pairs of real steps are measured.
    forecaster = SpreadForecaster(0.0, 0.5, 0.9, np.full(2, -1.0), np.full(2, 1.0))
    assert coverage(forecaster, blanked)["points"] == (3 + 0 + 1) + (2 + 0 + 0)
    with pytest.raises(ValueError, match="real_steps"):
        without_padding(series, np.array([4, 1]))
