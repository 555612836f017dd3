"""Several recordings as training data: files of one market are merged, separate runs of a market are not.

Two simulations with different seeds (or two captures of the same venues) both hold books of, say, alpha
BTC/USDT: merging them by time would interleave two unrelated markets. So files are grouped into runs — a file
joins a run only if none of its book streams (venue, symbol) is already there — each run is replayed on its own
(with `--range` applied to its own span), and the datasets are concatenated.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from bot.bus.codec import DecodeError, decode_event
from bot.config import RootConfig
from bot.events import BookEvent
from bot.model.dataset import Dataset, build_dataset
from bot.model.labels import LabelSettings
from bot.recording import read_lines

_PEEK_LINES = 5_000


def book_streams(path: Path) -> set[tuple[str, str]]:
    """Return the (venue, symbol) book streams among the first lines of a recording."""
    streams: set[tuple[str, str]] = set()
    for line in itertools.islice(read_lines(path), _PEEK_LINES):
        try:
            event = decode_event(line)
        except DecodeError:
            continue
        if isinstance(event, BookEvent):
            streams.add((event.venue, event.symbol))
    return streams


def group_runs(files: Sequence[Path]) -> list[list[Path]]:
    """Group files into runs: each file joins the first run none of whose book streams it repeats."""
    runs: list[tuple[list[Path], set[tuple[str, str]]]] = []
    for path in files:
        streams = book_streams(Path(path))
        for members, seen in runs:
            if not streams & seen:
                members.append(Path(path))
                seen |= streams
                break
        else:
            runs.append(([Path(path)], set(streams)))
    return [members for members, _ in runs]


def concat(datasets: Sequence[Dataset]) -> Dataset:
    """Concatenate datasets of separate runs; opportunity ids get a run prefix so that they stay distinct."""
    if len(datasets) == 1:
        return datasets[0]
    first = datasets[0]
    ids = [f"run{i}:{oid}" for i, ds in enumerate(datasets) for oid in ds.opportunity_ids]
    digest = hashlib.sha256(":".join(ds.fingerprint for ds in datasets).encode()).hexdigest()[:16]

    changes: dict[str, Any] = {"opportunity_ids": ids, "fingerprint": digest}
    for f in fields(first):  # every per-sample field, so that fields added to Dataset are carried along
        value = getattr(first, f.name)
        if f.name in changes or not isinstance(value, np.ndarray | list) or len(value) != len(first):
            continue
        if isinstance(value, list):
            changes[f.name] = [item for ds in datasets for item in getattr(ds, f.name)]
        else:
            changes[f.name] = np.concatenate([getattr(ds, f.name) for ds in datasets])
    return replace(first, **changes)


def build_runs_dataset(
    files: Sequence[Path],
    config: RootConfig,
    kind: str,
    time_range: tuple[float, float],
    settings: LabelSettings,
    window: int,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Build one dataset over runs (see the module doc); `progress(done, total)` counts runs in thousandths."""
    runs = group_runs(files)
    parts = []
    for index, run in enumerate(runs):

        def run_progress(done: int, total: int, index: int = index) -> None:
            if progress is not None:
                progress(index * 1000 + (1000 * done) // max(total, 1), 1000 * len(runs))

        parts.append(build_dataset(run, config, kind, time_range, settings, window, run_progress))
    return concat(parts)
