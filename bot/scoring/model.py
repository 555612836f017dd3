"""The live model scorer: the LSTM trained for each (kind, symbol), the rule scorer wherever none fits.

For an opportunity of kind K on BASE/QUOTE it uses `{model_dir}/K__BASE-QUOTE.npz`, else `{model_dir}/K.npz`
(DESIGN.md). A model may use any subset of the feature tracker's features, in any order. A file that is
missing, unreadable, or built for unknown features or a longer window than the feature tracker keeps is not
used: the rule scorer scores instead and says so in `model` (`rule`). Files are checked for changes every
`reload_check_s` and reloaded when they change; a model older than `max_age_h` keeps scoring but is flagged
for retraining (logged once, counted in `stats.stale_models`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bot.clock import Clock
from bot.model.file import ModelFile, ModelFileError, load_model
from bot.scoring.rule import RuleScorer, Score
from strategies.base import Evaluation, OpportunityKey

log = logging.getLogger(__name__)

Predict = Callable[[ModelFile, NDArray[Any]], Mapping[str, NDArray[Any]]]
"""Model outputs for raw feature windows (batch, time, features): `p_profitable`, `lifetime_ms`, `edge_bps`."""


class WindowSource(Protocol):
    """Where the scorer reads each opportunity key's recent feature vectors (the feature tracker)."""

    @property
    def window(self) -> int: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def windows(self, keys: Sequence[OpportunityKey]) -> NDArray[np.float32]: ...


@dataclass(slots=True)
class ModelScorerStats:
    """What the model scorer did."""

    by_model: int = 0
    by_rule: int = 0
    non_finite: int = 0
    loads: int = 0
    load_errors: int = 0
    stale_models: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Slot:
    """What one candidate path held when last looked at."""

    signature: tuple[int, int] | None  # (mtime_ns, size), None if the file did not exist
    model: ModelFile | None = None
    name: str = "rule"
    columns: NDArray[np.intp] | None = None  # the model's features among the window source's, None if all in order


def model_file_names(kind: str, symbol: str) -> tuple[str, str]:
    """Return the per-symbol and the per-kind model file names for an opportunity (DESIGN.md)."""
    base, quote = symbol.split("/", 1)
    return f"{kind}__{base}-{quote}.npz", f"{kind}.npz"


def model_name(meta: Mapping[str, Any]) -> str:
    """Return the `name@version` a model's signals carry."""
    name = meta.get("model")
    if isinstance(name, str) and "@" in name:
        return name
    return f"lstm@{str(meta.get('data_fingerprint', 'unknown'))[:8]}"


def created_epoch_s(meta: Mapping[str, Any]) -> float | None:
    """Return when a model was created, in Unix seconds, from its `created` entry (ISO 8601 or epoch s/ms)."""
    created = meta.get("created")
    if isinstance(created, int | float) and math.isfinite(created):
        return float(created) / 1_000.0 if created > 1e11 else float(created)
    if isinstance(created, str):
        try:
            parsed = datetime.fromisoformat(created)
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None


class ModelScorer:
    """Score each update's tradeable evaluations in one batch per model."""

    def __init__(
        self,
        model_dir: Path,
        windows: WindowSource,
        fallback: RuleScorer,
        predict: Predict,
        clock: Clock,
        max_age_h: float = 24.0,
        reload_check_s: float = 5.0,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self.stats = ModelScorerStats()
        self._dir = Path(model_dir)
        self._windows = windows
        self._fallback = fallback
        self._predict = predict
        self._clock = clock
        self._max_age_s = max_age_h * 3_600.0
        self._reload_check_s = reload_check_s
        self._wall_time = wall_time
        self._slots: dict[Path, _Slot] = {}
        self._candidates: dict[tuple[str, str], tuple[Path, ...]] = {}
        self._checked_at: float | None = None

    def model_for(self, kind: str, symbol: str) -> tuple[str, ModelFile | None]:
        """Return the name and model that score (kind, symbol) now: ("rule", None) if no model fits."""
        found = self._fitting(kind, symbol)
        return (found[1].name, found[1].model) if found is not None else ("rule", None)

    def _fitting(self, kind: str, symbol: str) -> tuple[Path, _Slot] | None:
        """Return the first candidate file of (kind, symbol) holding a usable model, with its slot."""
        paths = self._candidates.get((kind, symbol))
        if paths is None:  # built once per (kind, symbol): this runs for every scored evaluation
            paths = tuple(self._dir / name for name in model_file_names(kind, symbol))
            self._candidates[(kind, symbol)] = paths
        for path in paths:
            slot = self._slot(path)
            if slot.model is not None:
                return path, slot
        return None

    def score_batch(self, evaluations: Sequence[Evaluation]) -> list[Score]:
        """Return one score per evaluation, in order; batch per model."""
        self._check_files()
        scores: list[Score | None] = [None] * len(evaluations)
        groups: dict[Path, list[int]] = {}
        for index, evaluation in enumerate(evaluations):
            found = self._fitting(evaluation.kind, evaluation.symbol)
            if found is None:
                scores[index] = self._fallback.score(evaluation)
                self.stats.by_rule += 1
            else:
                groups.setdefault(found[0], []).append(index)
        for path, indices in groups.items():
            self._score_group(path, [evaluations[i] for i in indices], indices, scores)
        return [score for score in scores if score is not None]

    def _score_group(
        self, path: Path, evaluations: list[Evaluation], indices: list[int], scores: list[Score | None]
    ) -> None:
        slot = self._slots[path]
        model, name = slot.model, slot.name
        assert model is not None  # grouped only when the slot holds a model
        window = int(model.meta["window"])
        raw = self._windows.windows([evaluation.key for evaluation in evaluations])[:, -window:, :]
        if slot.columns is not None:
            raw = raw[:, :, slot.columns]
        try:
            outputs = self._predict(model, raw)
        except (ModelFileError, ValueError) as exc:
            # A model that cannot predict is dropped until its file changes; the rules score meanwhile.
            log.warning("model %s fails to predict, the rule scorer takes over: %s", name, exc)
            self.stats.load_errors += 1
            self._slots[path] = _Slot(signature=slot.signature)
            for index, evaluation in zip(indices, evaluations, strict=True):
                scores[index] = self._fallback.score(evaluation)
                self.stats.by_rule += 1
            return
        p, lifetime, edge = outputs["p_profitable"], outputs["lifetime_ms"], outputs["edge_bps"]
        for row, (index, evaluation) in enumerate(zip(indices, evaluations, strict=True)):
            values = (float(p[row]), float(lifetime[row]), float(edge[row]))
            if not all(math.isfinite(v) for v in values):
                # A model that says NaN has said nothing: the rules score this one, counted.
                self.stats.non_finite += 1
                self.stats.by_rule += 1
                scores[index] = self._fallback.score(evaluation)
                continue
            self.stats.by_model += 1
            scores[index] = Score(
                score=min(1.0, max(0.0, values[0])),
                expected_lifetime_ms=max(0.0, values[1]),
                expected_edge_bps=values[2],
                model=name,
            )

    def _check_files(self) -> None:
        now = self._clock.monotonic()
        if self._checked_at is not None and now - self._checked_at < self._reload_check_s:
            return
        self._checked_at = now
        for path in list(self._slots):
            self._slots[path] = self._refresh(path, self._slots[path])

    def _slot(self, path: Path) -> _Slot:
        slot = self._slots.get(path)
        if slot is None:
            slot = self._refresh(path, _Slot(signature=None))
            self._slots[path] = slot
        return slot

    def _refresh(self, path: Path, slot: _Slot) -> _Slot:
        try:
            stat = path.stat()
        except OSError:
            if slot.model is not None:
                log.warning("model %s is gone: the rule scorer takes over", path)
            return _Slot(signature=None)
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == slot.signature:  # unchanged: keep the model, or keep not using a file that failed
            self._flag_if_stale(slot)
            return slot
        return self._load(path, signature)

    def _load(self, path: Path, signature: tuple[int, int]) -> _Slot:
        available = self._windows.features
        try:
            model = load_model(path)
        except ModelFileError as exc:
            self.stats.load_errors += 1
            log.warning("model not used, the rule scorer takes over: %s", exc)
            return _Slot(signature=signature)
        wanted = [str(name) for name in model.meta.get("features", [])]
        unknown = [name for name in wanted if name not in available]
        if unknown or not wanted:
            self.stats.load_errors += 1
            log.warning("model %s not used: the code computes no features named %s: retrain", path, unknown or "[]")
            return _Slot(signature=signature)
        columns = None if tuple(wanted) == available else np.array([available.index(n) for n in wanted], np.intp)
        window = model.meta.get("window")
        if not isinstance(window, int) or not 1 <= window <= self._windows.window:
            self.stats.load_errors += 1
            log.warning(
                "model %s not used: its window %r exceeds the %d updates kept per opportunity (scorer.feature_window)",
                path,
                window,
                self._windows.window,
            )
            return _Slot(signature=signature)
        self.stats.loads += 1
        slot = _Slot(signature=signature, model=model, name=model_name(model.meta), columns=columns)
        log.info("model %s loaded from %s", slot.name, path)
        self._flag_if_stale(slot)
        return slot

    def _flag_if_stale(self, slot: _Slot) -> None:
        if slot.model is None or slot.name in self.stats.stale_models:
            return
        created = created_epoch_s(slot.model.meta)
        if created is None or self._wall_time() - created > self._max_age_s:
            self.stats.stale_models.add(slot.name)
            log.warning(
                "model %s is older than %.0f h (or undated): retrain it with `arbbot train`",
                slot.name,
                self._max_age_s / 3_600.0,
            )
