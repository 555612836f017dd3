"""The spread forecast in the execution window: how long a gap should last, from the model file's forecaster.

`train` stores a SpreadForecaster (bot/model/forecast.py) with each model: a mean-reverting path of a key's net
edge, step by step (one step per update of the key), with conformal intervals. The remaining lifetime of a gap is
the first step at which the **mean** path of net edge reaches 0, times the key's update interval: an expected
lifetime, like the model's own `expected_lifetime_ms` it stands in for. (The interval's lower bound would be a
promise rather than an expectation; on the demo market it reaches 0 at the first step for almost every gap, so
every window closed before it opened and nothing traded. Risk already prices the chance that the gap is gone
through the signal's score.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.clock import Clock, SystemClock
from bot.config import RootConfig
from bot.messages import Signal
from bot.model.file import ModelFileError, load_model
from bot.model.forecast import SpreadForecaster
from bot.scoring.model import model_file_names

log = logging.getLogger(__name__)


def remaining_lifetime_ms(forecaster: SpreadForecaster, net_edge_bps: float, interval_ms: float) -> float:
    """Steps until the forecast's mean path of net edge is ≤ 0, times `interval_ms`.

    0 when the edge is already ≤ 0; the forecaster's whole horizon when the path stays above 0 (it sees no
    further, so the window ends there).
    """
    if net_edge_bps <= 0.0:
        return 0.0
    mean = forecaster.point(np.array([net_edge_bps], dtype=np.float64))[0]
    gone = np.flatnonzero(mean <= 0.0)
    steps = int(gone[0]) + 1 if gone.size else forecaster.horizon
    return steps * interval_ms


@dataclass(slots=True)
class _Slot:
    signature: tuple[int, int] | None  # (mtime_ns, size), None if the file did not exist
    forecaster: SpreadForecaster | None = None


class ModelSpreadForecast:
    """A SpreadForecast hook (bot/risk/window.py) reading the forecasters stored in a folder of model files.

    For a signal of kind K on BASE/QUOTE it uses the forecaster of `K__BASE-QUOTE.npz`, else of `K.npz` (the live
    scorer's lookup); a file that is missing, unreadable or holds no forecaster is passed over. Files are checked
    for changes at most every `reload_check_s`. Returns None (the signal's own lifetime is used) when no file
    holds a forecaster or the key's update interval is not measured yet.
    """

    def __init__(self, model_dir: Path, clock: Clock | None = None, reload_check_s: float = 5.0) -> None:
        self._dir = Path(model_dir)
        self._clock = clock or SystemClock()
        self._reload_check_s = reload_check_s
        self._slots: dict[Path, _Slot] = {}
        self._checked_at: float | None = None

    def __call__(self, signal: Signal, interval_ms: float | None) -> float | None:
        """The gap's remaining lifetime in ms from the signal's update, or None."""
        if interval_ms is None:
            return None
        forecaster = self.forecaster_for(signal.kind, signal.symbol)
        if forecaster is None:
            return None
        return remaining_lifetime_ms(forecaster, signal.net_edge_bps, interval_ms)

    def forecaster_for(self, kind: str, symbol: str) -> SpreadForecaster | None:
        """The forecaster serving (kind, symbol), or None."""
        if "/" not in symbol:
            return None
        self._check_files()
        for name in model_file_names(kind, symbol):
            path = self._dir / name
            slot = self._slots.get(path)
            if slot is None:
                slot = self._slots[path] = self._refresh(path, _Slot(signature=None))
            if slot.forecaster is not None:
                return slot.forecaster
        return None

    def _check_files(self) -> None:
        now = self._clock.monotonic()
        if self._checked_at is not None and now - self._checked_at < self._reload_check_s:
            return
        self._checked_at = now
        for path, slot in list(self._slots.items()):
            self._slots[path] = self._refresh(path, slot)

    def _refresh(self, path: Path, slot: _Slot) -> _Slot:
        try:
            stat = path.stat()
        except OSError:
            return _Slot(signature=None)
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == slot.signature:
            return slot
        return _Slot(signature=signature, forecaster=_load(path))


def _load(path: Path) -> SpreadForecaster | None:
    try:
        model = load_model(path)
    except ModelFileError as exc:
        log.warning("risk: no spread forecast from %s: %s", path, exc)
        return None
    try:
        forecaster = SpreadForecaster.from_arrays(model.baselines)
    except KeyError:
        log.info("risk: %s holds no spread forecaster", path)
        return None
    except (ValueError, TypeError) as exc:
        log.warning("risk: the spread forecaster in %s is unusable: %s", path, exc)
        return None
    lower, upper = forecaster.error_lower, forecaster.error_upper
    usable = (
        bool(np.isfinite([forecaster.mu, forecaster.phi]).all())
        and lower.ndim == 1
        and lower.size >= 1
        and lower.shape == upper.shape
        and bool(np.isfinite(lower).all())
    )
    if not usable:
        log.warning("risk: the spread forecaster in %s is unusable (non-finite or mis-shaped)", path)
        return None
    log.info("risk: spread forecast from %s (horizon %d updates)", path, forecaster.horizon)
    return forecaster


def spread_forecast(config: RootConfig, clock: Clock | None = None) -> ModelSpreadForecast | None:
    """The spread forecast for RiskService from the config's `scorer.model_dir`, or None when it names none."""
    model_dir = config.scorer.model_dir
    if model_dir is None:
        return None
    return ModelSpreadForecast(model_dir, clock, config.scorer.reload_check_s)
