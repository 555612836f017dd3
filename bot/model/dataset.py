"""Training data from recordings: the signals a replay emits, each with its feature window and its labels.

Samples are the `open`/`update` signals of one strategy kind that the signals engine (`build_engine`, on a
replay clock) emits while replaying the files; the window is read from a `FeatureTracker` registered on that
engine at that moment, and the labels come from `StreamingLabeler` (see `bot.model.labels`). A sample with pool
legs pays gas for the config's gas units of its kind, the gas token priced as its signal priced it.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.bus.codec import DecodeError, decode_event
from bot.config import RootConfig
from bot.messages import Signal
from bot.model.features import FEATURE_NAMES, FeatureTracker
from bot.model.labels import GasCharge, LabelSettings, StreamingLabeler
from bot.recording import RecordingError, merge_events, read_lines, time_key
from bot.rejections import RejectionCounter
from bot.replay import Replayer
from strategies.base import Evaluation, OpportunityKey
from strategies.gas import ETH_PER_GWEI

SUPPORTED_KINDS = ("cex_cex", "cex_dex", "dex_dex")
_PROGRESS_EVERY = 20_000


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields, not datasets
class Dataset:
    """Samples (signals) with their raw feature windows and labels, in replay order (time ascending)."""

    feature_names: tuple[str, ...]
    windows: NDArray[np.float32]
    """(N, T, F) raw features, oldest first."""
    ts: NDArray[np.int64]
    """(N,) time of the signal on the replay's receive-time clock."""
    keys: list[OpportunityKey]
    opportunity_ids: list[str]
    status: list[str]
    net_edge_bps: NDArray[np.float64]
    size: NDArray[np.float64]
    buy_price: NDArray[np.float64]
    rule_score: NDArray[np.float64]
    profitable: NDArray[np.float32]
    captured_edge_bps: NDArray[np.float64]
    captured_pnl: NDArray[np.float64]
    lifetime_ms: NDArray[np.float64]
    settings: LabelSettings
    fingerprint: str
    filled: NDArray[np.float64]
    """Base units the execution filled (less than `size` when the books at t + latency were thinner)."""
    lifetime_censored: NDArray[np.bool_]
    """True where the gap was still open at the horizon or at the end of the recording: a lower bound."""
    real_steps: NDArray[np.int64]
    """(N,) how many of the window's steps are the key's own: the first T - real_steps are padding (copies of the
    oldest step, the key had fewer than T evaluations)."""

    def __len__(self) -> int:
        return len(self.ts)

    def subset(self, index: NDArray[np.intp] | slice, tag: str) -> Dataset:
        """The samples at `index`; `tag` names the selection in the new fingerprint."""
        fields: dict[str, Any] = {}
        for name in _PER_SAMPLE:
            value = getattr(self, name)
            if isinstance(value, list):
                picked = range(len(value))[index] if isinstance(index, slice) else index
                fields[name] = [value[i] for i in picked]
            else:
                fields[name] = value[index]
        digest = hashlib.sha256(f"{self.fingerprint}:{tag}".encode()).hexdigest()[:16]
        return replace(self, fingerprint=digest, **fields)

    def split(self, fraction: float) -> tuple[Dataset, Dataset]:
        """Split by time: the first `fraction` of the samples, then the rest (samples of one instant stay together).

        The first part's labels may look past the cut (executions and lifetimes run forward in time).
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        cut = round(len(self) * fraction)
        while 0 < cut < len(self) and self.ts[cut] == self.ts[cut - 1]:
            cut += 1
        return self.subset(slice(0, cut), f"first{fraction}"), self.subset(slice(cut, None), f"rest{fraction}")


_PER_SAMPLE = (
    "windows",
    "ts",
    "keys",
    "opportunity_ids",
    "status",
    "net_edge_bps",
    "size",
    "buy_price",
    "rule_score",
    "profitable",
    "captured_edge_bps",
    "captured_pnl",
    "lifetime_ms",
    "filled",
    "lifetime_censored",
    "real_steps",
)


def _first_and_last_time(path: Path, digest: Any) -> tuple[int, int] | None:
    """Hash the file's (decompressed) lines into `digest`; return the times of its first and last events."""
    first: int | None = None
    tail: deque[bytes] = deque(maxlen=64)
    for line in read_lines(path):
        digest.update(line)
        if first is None:
            try:
                first = time_key(decode_event(line))
            except DecodeError:
                continue
        tail.append(line)
    for line in reversed(tail):
        try:
            last = time_key(decode_event(line))
        except DecodeError:
            continue
        return (first, last) if first is not None else None
    return None


def recording_span(files: Sequence[Path]) -> tuple[int, int, str]:
    """Return (first, last) receive time over the files (each time-ordered) and a digest of their content."""
    digest = hashlib.sha256()
    spans = []
    for path in files:
        digest.update(f"\0{Path(path).name}\0".encode())
        span = _first_and_last_time(Path(path), digest)
        if span is not None:
            spans.append(span)
    if not spans:
        raise RecordingError(f"no readable events in {', '.join(str(p) for p in files)}")
    return min(s[0] for s in spans), max(s[1] for s in spans), digest.hexdigest()


def default_settings(config: RootConfig) -> LabelSettings:
    """Label settings with the config's taker fees (the default fee for other venues)."""
    return LabelSettings(fee_bps={name: venue.taker_fee_bps for name, venue in config.venues.items()})


def gas_units(config: RootConfig, kind: str) -> int | None:
    """Return the gas a trade of `kind` burns as the config's strategies charge it (None: no on-chain leg)."""
    if kind == "cex_dex" and config.chain is not None:
        return config.chain.gas_units_per_swap
    if kind == "dex_dex" and config.strategies.dex_dex is not None:
        return 2 * config.strategies.dex_dex.gas_units_per_swap  # both swaps, one transaction, as the strategy
    return None


def gas_charge(signal: Signal, units: int) -> GasCharge:
    """Return the gas of `signal`'s transaction: `units`, with the gas token priced as the signal priced it.

    The signal's `costs.gas` is `units` at its base fee plus tip, times the gas token's price in the quote; so
    that price is `costs.gas` over the gas in the token. ValueError when the signal assumed no gas price at all.
    """
    costs = signal.costs
    if costs.base_fee_gwei is None:
        raise ValueError(f"{signal.kind} signal {signal.id} carries no gas price: its gas cannot be labelled")
    burnt = units * (costs.base_fee_gwei + (costs.priority_fee_gwei or 0.0)) * ETH_PER_GWEI
    if burnt <= 0.0:
        raise ValueError(f"{signal.kind} signal {signal.id} assumed a zero gas price: the gas token has no price in it")
    return GasCharge(units, costs.gas / burnt)


class _Collector:
    """The signal sink: keeps the samples of one kind inside the time range, with their windows."""

    def __init__(
        self,
        kind: str,
        low: float,
        high: float,
        tracker: FeatureTracker,
        labeler: StreamingLabeler,
        now: Callable[[], int],
        gas_units: int | None = None,
    ) -> None:
        self.kind, self.low, self.high = kind, low, high
        self.gas_units = gas_units
        self.closed_high = False
        """Whether `high` itself is in range (the last range ends at the recording's end, inclusive)."""
        self.tracker, self.labeler, self.now = tracker, labeler, now
        self.windows: list[NDArray[np.float32]] = []
        self.ts: list[int] = []
        self.signals: list[tuple[OpportunityKey, str, str, float, float, float, float]] = []
        self.real_steps: list[int] = []
        self._evaluated: dict[OpportunityKey, int] = {}

    def on_evaluations(self, batch: Sequence[Evaluation]) -> None:
        """Count the evaluations of each key of the kind: the tracker appends one step per evaluation."""
        evaluated, kind = self._evaluated, self.kind
        for ev in batch:
            if ev.kind == kind:
                key = (ev.kind, ev.symbol, ev.buy_venue, ev.sell_venue)
                evaluated[key] = evaluated.get(key, 0) + 1

    def __call__(self, signal: Signal) -> None:
        if signal.kind != self.kind or signal.status == "closed":
            return
        t = self.now()
        if not (self.low <= t < self.high or (t == self.high and self.closed_high)):
            return
        key = (signal.kind, signal.symbol, signal.buy_venue, signal.sell_venue)
        self.windows.append(self.tracker.windows([key])[0])
        self.real_steps.append(min(self._evaluated.get(key, 0), self.tracker.window))
        self.ts.append(t)
        self.signals.append(
            (
                key,
                signal.opportunity_id,
                signal.status,
                signal.net_edge_bps,
                signal.size,
                signal.buy_price,
                signal.score,
            )
        )
        gas = gas_charge(signal, self.gas_units) if self.gas_units is not None else None
        self.labeler.add(key, t, signal.size, gas)


def build_dataset(
    files: Sequence[Path],
    config: RootConfig,
    kind: str = "cex_cex",
    time_range: tuple[float, float] = (0.0, 1.0),
    settings: LabelSettings | None = None,
    window: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Replay `files` (merged by receive time) through the config's engine and label its signals of `kind`.

    `time_range` (A, B) keeps the samples whose time lies in [A, B) fractions of the recordings' span (B = 1
    inclusive); the whole recording is still replayed (features warm up before A) and labels may look past B
    (executions at t + latency, lifetimes up to the horizon), so the labels of a training range can see into
    the data after it. `settings` None: the config's taker fees. `progress(done_ms, total_ms)` follows the replay in
    recording time. Kinds: `SUPPORTED_KINDS` (the legs of cex_dex and dex_dex that are pools execute in blocks, see
    `bot.model.labels`).
    """
    if kind not in SUPPORTED_KINDS:
        raise ValueError(f"build_dataset labels {', '.join(SUPPORTED_KINDS)} only, not {kind!r}")
    low_fraction, high_fraction = time_range
    if not 0.0 <= low_fraction <= high_fraction <= 1.0:
        raise ValueError(f"time_range must satisfy 0 <= A <= B <= 1, got {time_range}")
    settings = settings if settings is not None else default_settings(config)
    # Samples are what the rule scorer signals: a model in the config must not decide what the next one learns.
    config = config.model_copy(update={"scorer": config.scorer.model_copy(update={"model_dir": None})})
    start, end, content = recording_span(files)
    span = end - start
    rejections = RejectionCounter()
    tracker = FeatureTracker(window)
    labeler = StreamingLabeler(settings)
    collector = _Collector(
        kind,
        start + low_fraction * span,
        start + high_fraction * span,
        tracker,
        labeler,
        lambda: replayer.clock.now_ms(),
        gas_units(config, kind),
    )
    collector.closed_high = high_fraction >= 1.0
    replayer = Replayer(config, collector, rejections)
    engine = replayer.engine
    engine.add_market_listener(tracker.on_market_event)
    engine.add_market_listener(labeler.on_market_event)
    engine.add_evaluation_listener(tracker.on_evaluations)
    engine.add_evaluation_listener(labeler.on_evaluations)
    engine.add_evaluation_listener(collector.on_evaluations)
    for count, event in enumerate(merge_events(files, rejections), 1):
        now = time_key(event)
        labeler.advance(now)
        replayer.feed(event)
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress(max(now - start, 0), span)
    labeler.finish(end)
    if progress is not None:
        progress(span, span)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "content": content,
                "config": config.fingerprint(),
                "kind": kind,
                "time_range": [low_fraction, high_fraction],
                "settings": settings.to_meta(),
                "window": window,
                "features": FEATURE_NAMES,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return _assemble(collector, labeler, settings, fingerprint, window)


def _assemble(
    collector: _Collector, labeler: StreamingLabeler, settings: LabelSettings, fingerprint: str, window: int
) -> Dataset:
    rows = collector.signals
    executions = [label.execution for label in labeler.labels]
    if any(execution is None for execution in executions):
        raise RuntimeError("a sample was left without an execution")  # finish() executes every sample
    pnl = np.array([e.pnl for e in executions if e is not None], dtype=np.float64)
    windows = (
        np.stack(collector.windows)
        if collector.windows
        else np.zeros((0, window, len(FEATURE_NAMES)), dtype=np.float32)
    )
    return Dataset(
        feature_names=FEATURE_NAMES,
        windows=windows,
        ts=np.array(collector.ts, dtype=np.int64),
        keys=[row[0] for row in rows],
        opportunity_ids=[row[1] for row in rows],
        status=[row[2] for row in rows],
        net_edge_bps=np.array([row[3] for row in rows], dtype=np.float64),
        size=np.array([row[4] for row in rows], dtype=np.float64),
        buy_price=np.array([row[5] for row in rows], dtype=np.float64),
        rule_score=np.array([row[6] for row in rows], dtype=np.float64),
        profitable=(pnl > 0.0).astype(np.float32),
        captured_edge_bps=np.array([e.edge_bps for e in executions if e is not None], dtype=np.float64),
        captured_pnl=pnl,
        lifetime_ms=np.array([label.lifetime_ms for label in labeler.labels], dtype=np.float64),
        settings=settings,
        fingerprint=fingerprint,
        filled=np.array([e.filled for e in executions if e is not None], dtype=np.float64),
        lifetime_censored=np.array([label.lifetime_censored for label in labeler.labels], dtype=np.bool_),
        real_steps=np.array(collector.real_steps, dtype=np.int64),
    )
