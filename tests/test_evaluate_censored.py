"""Evaluation leaves censored lifetimes out of the lifetime error and says how many it left out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_train import FAST, synthetic

from bot.model.evaluate import evaluate_model, format_table
from bot.model.train import train_model


def test_censored_lifetimes_are_counted_not_scored() -> None:
    model = train_model(synthetic(n=600), dataclasses.replace(FAST, epochs=1)).model
    held_out = synthetic(n=300, seed=3)
    censored = np.arange(len(held_out)) % 3 == 0
    report, scores, _ = evaluate_model(model, dataclasses.replace(held_out, lifetime_censored=censored))
    exact = ~censored
    lstm = report["lstm"]
    assert lstm["lifetime_censored"] == report["data"]["censored_lifetimes"] == 100
    assert lstm["lifetime_samples"] == 200
    expected = float(np.mean(np.abs(scores["lifetime_ms"] - held_out.lifetime_ms)[exact]))
    assert lstm["lifetime_mae_ms"] == pytest.approx(expected, rel=1e-12)
    # A censored value is only a lower bound: whatever it is, the error does not move.
    moved = dataclasses.replace(
        held_out, lifetime_censored=censored, lifetime_ms=np.where(censored, 1e9, held_out.lifetime_ms)
    )
    assert evaluate_model(model, moved)[0]["lstm"]["lifetime_mae_ms"] == lstm["lifetime_mae_ms"]
    assert "100 censored left out" in format_table(report)


def test_every_lifetime_censored_leaves_no_error_to_report() -> None:
    model = train_model(synthetic(n=600), dataclasses.replace(FAST, epochs=1)).model
    held_out = synthetic(n=200, seed=4)
    report, _, _ = evaluate_model(model, dataclasses.replace(held_out, lifetime_censored=np.ones(200, dtype=bool)))
    assert report["lstm"]["lifetime_mae_ms"] is None and report["lstm"]["lifetime_samples"] == 0
    assert "lifetime MAE - over 0 exact lifetimes" in format_table(report)
