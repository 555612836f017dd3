"""Model outputs from raw feature windows: the one function the live scorer and `arbbot evaluate` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.model.baselines import LogisticModel
from bot.model.file import ModelFile, ModelFileError
from bot.model.normalise import Normalisation, TargetScale

Array = NDArray[Any]

_CACHE_SIZE = 16


@dataclass(frozen=True)
class _Prepared:
    """What `predict` reads from a model's meta, parsed once per model."""

    window: int
    normalisation: Normalisation
    lifetime: TargetScale
    edge: TargetScale


_cache: dict[int, tuple[ModelFile, _Prepared]] = {}


def _prepared(model: ModelFile) -> _Prepared:
    hit = _cache.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    meta = model.meta
    try:
        targets = meta["targets"]
        prepared = _Prepared(
            window=int(meta["window"]),
            normalisation=Normalisation.from_meta(meta["normalisation"]),
            lifetime=TargetScale.from_meta(targets["lifetime_log_ms"]),
            edge=TargetScale.from_meta(targets["edge_bps"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"model meta lacks what predict needs ({exc!r}): retrain with arbbot train") from None
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[id(model)] = (model, prepared)  # keeping the model alive keeps its id from being reused
    return prepared


def predict(model: ModelFile, raw_windows: Array) -> dict[str, NDArray[np.float64]]:
    """Return `p_profitable`, `lifetime_ms` and `edge_bps` (batch,) for raw windows (batch, time, features).

    Only the last `meta["window"]` steps are used; normalisation and target scaling come from the model file.
    """
    prepared = _prepared(model)
    raw = np.asarray(raw_windows)
    if raw.ndim != 3 or raw.shape[1] < prepared.window or raw.shape[2] != model.lstm.input_size:
        raise ValueError(
            f"raw_windows must have shape (batch, >= {prepared.window}, {model.lstm.input_size}), got {raw.shape}"
        )
    x = prepared.normalisation.apply(raw[:, -prepared.window :, :])
    h_last = model.lstm.forward(x)[:, -1, :]
    heads = model.heads.predict(h_last)
    return {
        "p_profitable": heads["p_profitable"].astype(np.float64),
        "lifetime_ms": np.exp(np.minimum(prepared.lifetime.decode(heads["lifetime_log_ms"]), 30.0)),
        "edge_bps": prepared.edge.decode(heads["edge_bps"]),
    }


def logistic_predict(model: ModelFile, raw_current: Array) -> NDArray[np.float64]:
    """Return the stored logistic baseline's probabilities for raw current feature vectors (batch, features)."""
    try:
        logistic = LogisticModel.from_arrays(model.baselines)
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    return logistic.predict(raw_current)
