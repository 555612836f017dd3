"""The model file (DESIGN.md): one `.npz` with the LSTM under its state-dict names, the heads under
`head.{name}.*`, baselines under `baseline.{name}.*` and the metadata as a JSON string under `meta`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.model.heads import Heads
from bot.model.lstm import LSTM

FORMAT_VERSION = 1
REQUIRED_META = (
    "features",
    "window",
    "normalisation",
    "architecture",
    "label",
    "data_fingerprint",
    "metrics",
    "created",
    "format_version",
)

Array = NDArray[Any]


class ModelFileError(ValueError):
    """A model file that cannot be used; the message says why and names the file."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A loaded model: the network, its heads, fitted baselines and metadata."""

    lstm: LSTM
    heads: Heads
    meta: dict[str, Any]
    baselines: dict[str, Array] = field(default_factory=dict)


def save_model(
    path: Path, lstm: LSTM, heads: Heads, meta: Mapping[str, Any], baselines: Mapping[str, Array] | None = None
) -> None:
    """Write a model file; `meta` must carry every key DESIGN.md lists (format_version is set here)."""
    full_meta = {**meta, "format_version": FORMAT_VERSION}
    missing = [key for key in REQUIRED_META if key not in full_meta]
    if missing:
        raise ModelFileError(f"{path}: meta lacks {', '.join(missing)}")
    arrays: dict[str, Array] = {**lstm.state_dict(), **heads.params}
    arrays.update({f"baseline.{name}": value for name, value in (baselines or {}).items()})
    arrays["meta"] = np.array(json.dumps(full_meta, sort_keys=True))
    _write_npz(path, arrays)


def load_model(
    path: Path, features: Sequence[str] | None = None, window: int | None = None, dtype: Any = np.float32
) -> ModelFile:
    """Read a model file, refusing one whose format version, feature list or window differs from the code's."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({exc})") from None
    if "meta" not in arrays:
        raise ModelFileError(f"{path}: no meta entry")
    meta: dict[str, Any] = json.loads(str(arrays.pop("meta")))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    if features is not None and list(meta.get("features", [])) != list(features):
        had, want = list(meta.get("features", [])), list(features)
        missing, extra = [f for f in want if f not in had], [f for f in had if f not in want]
        raise ModelFileError(
            f"{path}: its features differ from the code's (missing {missing}, extra {extra}, or another order): retrain"
        )
    if window is not None and meta.get("window") != window:
        raise ModelFileError(f"{path}: window {meta.get('window')!r}, the code uses {window}: retrain")
    return _assemble(path, arrays, meta, dtype)


def _assemble(path: Path, arrays: dict[str, Array], meta: dict[str, Any], dtype: Any) -> ModelFile:
    state = {k: v for k, v in arrays.items() if not k.startswith(("head.", "baseline."))}
    heads = {k: v.astype(dtype) for k, v in arrays.items() if k.startswith("head.")}
    baselines = {k.removeprefix("baseline."): v for k, v in arrays.items() if k.startswith("baseline.")}
    try:
        lstm = LSTM.from_state_dict(state, dtype=dtype)
        return ModelFile(lstm, Heads(heads, lstm.hidden_size), meta, baselines)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def import_torch(state_path: Path, meta_path: Path, out: Path) -> ModelFile:
    """Make a model file from a PyTorch state dict saved as `.npz` (LSTM keys and `head.*`) and a META.json."""
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{meta_path}: not readable JSON ({exc})") from None
    try:
        with np.load(state_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{state_path}: not a readable .npz ({exc})") from None
    model = _assemble(Path(state_path), arrays, meta, np.float64)
    save_model(out, model.lstm, model.heads, meta, model.baselines)
    return model


def export_torch(model_path: Path, out: Path) -> None:
    """Write a model's LSTM and heads as a state dict `.npz` that `torch.nn.LSTM.load_state_dict` accepts."""
    model = load_model(model_path, dtype=np.float64)
    _write_npz(out, {**model.lstm.state_dict(), **model.heads.params})


def _write_npz(path: Path, arrays: Mapping[str, Array]) -> None:
    with open(path, "wb") as file:
        np.savez(file, **dict(arrays))  # type: ignore[arg-type]  # numpy's stub reads the kwargs as `allow_pickle`
