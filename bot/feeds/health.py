"""Feed health: per stream state (live / stale / resyncing …), fault counts, lag and venue clock offset.

Staleness is judged on local receive time only: venue clocks and ours disagree (seconds, in real data).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class StreamState(StrEnum):
    """Where one (venue, symbol) book stream stands."""

    CONNECTING = "connecting"  # no book yet
    RESYNCING = "resyncing"  # the feed lost sync (gap, disconnect) and is rebuilding the book
    LIVE = "live"
    STALE = "stale"  # no update for longer than the venue's stale_after_ms
    INVALID = "invalid"  # the venue's latest book failed validation (crossed, NaN, …)


USABLE = StreamState.LIVE
WORST_FIRST = (StreamState.INVALID, StreamState.STALE, StreamState.RESYNCING, StreamState.CONNECTING, StreamState.LIVE)


@dataclass(slots=True)
class StreamHealth:
    """One stream's state and when it last changed or heard from the venue."""

    state: StreamState = StreamState.CONNECTING
    since_ms: int = 0
    last_recv_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Receive-minus-event-time lag of one venue, and what it says about the venue's clock."""

    samples: int
    p50_ms: float
    p99_ms: float
    clock_offset_ms: float
    drift_ms: float
    drifting: bool


class LatencyTracker:
    """Rolling lag samples; the venue's clock offset is estimated by the lower envelope (minimum lag)
    of each window, since transport delay is never negative; drift is the change between windows."""

    def __init__(self, window: int = 2_000, drift_threshold_ms: float = 250.0) -> None:
        self._lags: deque[float] = deque(maxlen=window)
        self._window = window
        self._since_window = 0
        self._offsets: deque[float] = deque(maxlen=2)
        self._drift_threshold_ms = drift_threshold_ms

    def add(self, lag_ms: float) -> None:
        self._lags.append(lag_ms)
        self._since_window += 1
        if self._since_window >= self._window:
            self._offsets.append(min(self._lags))
            self._since_window = 0

    def stats(self) -> LatencyStats | None:
        if not self._lags:
            return None
        lags = np.fromiter(self._lags, dtype=float)
        p50, p99 = np.percentile(lags, [50, 99])
        offset = float(lags.min())
        drift = self._offsets[-1] - self._offsets[0] if len(self._offsets) == 2 else 0.0
        return LatencyStats(len(lags), float(p50), float(p99), offset, drift, abs(drift) > self._drift_threshold_ms)


@dataclass(slots=True)
class VenueHealth:
    """Counters and streams of one venue."""

    streams: dict[str, StreamHealth] = field(default_factory=dict)
    updates: int = 0
    reconnects: int = 0
    stale_intervals: int = 0
    untimed_books: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    latency: LatencyTracker = field(default_factory=LatencyTracker)


StateListener = Callable[[str, str, StreamState], None]


class FeedHealth:
    """Every venue's stream states and counters; listeners hear each state change."""

    def __init__(self) -> None:
        self.venues: dict[str, VenueHealth] = {}
        self._listeners: list[StateListener] = []

    def add_listener(self, listener: StateListener) -> None:
        """Call `listener(venue, symbol, new_state)` on every state change."""
        self._listeners.append(listener)

    def register(self, venue: str, symbol: str, now_ms: int) -> None:
        """Start tracking a stream as connecting from `now_ms`."""
        self.stream(venue, symbol).since_ms = now_ms

    def venue(self, venue: str) -> VenueHealth:
        health = self.venues.get(venue)
        if health is None:
            health = self.venues[venue] = VenueHealth()
        return health

    def stream(self, venue: str, symbol: str) -> StreamHealth:
        streams = self.venue(venue).streams
        stream = streams.get(symbol)
        if stream is None:
            stream = streams[symbol] = StreamHealth()
        return stream

    def state(self, venue: str, symbol: str) -> StreamState:
        return self.stream(venue, symbol).state

    def is_live(self, venue: str, symbol: str) -> bool:
        health = self.venues.get(venue)
        stream = health.streams.get(symbol) if health else None
        return stream is not None and stream.state is USABLE

    def on_book(self, venue: str, symbol: str, recv_ms: int, exchange_ms: int | None) -> None:
        """A valid book arrived."""
        health = self.venue(venue)
        health.updates += 1
        if exchange_ms is not None:
            health.latency.add(recv_ms - exchange_ms)
        stream = self.stream(venue, symbol)
        stream.last_recv_ms = recv_ms
        self._set(venue, symbol, stream, StreamState.LIVE, recv_ms)

    def on_fault(self, venue: str, symbol: str | None, kind: str, state: StreamState, now_ms: int) -> None:
        """The feed saw a fault of `kind`; the affected streams move to `state`."""
        health = self.venue(venue)
        health.faults[kind] += 1
        symbols = [symbol] if symbol is not None else list(health.streams)
        for name in symbols:
            self._set(venue, name, self.stream(venue, name), state, now_ms)

    def on_reconnect(self, venue: str, now_ms: int) -> None:
        """The feed is opening a new connection to `venue`; its streams resync."""
        health = self.venue(venue)
        health.reconnects += 1
        for name, stream in health.streams.items():
            self._set(venue, name, stream, StreamState.RESYNCING, now_ms)

    def mark_stale(self, venue: str, now_ms: int, stale_after_ms: int) -> list[str]:
        """Mark live streams silent for longer than `stale_after_ms` as stale; return their symbols."""
        health = self.venue(venue)
        stale = []
        for name, stream in health.streams.items():
            silent = stream.last_recv_ms is not None and now_ms - stream.last_recv_ms > stale_after_ms
            if stream.state is StreamState.LIVE and silent:
                health.stale_intervals += 1
                self._set(venue, name, stream, StreamState.STALE, now_ms)
                stale.append(name)
        return stale

    def unhealthy_for(self, venue: str, now_ms: int) -> int:
        """How long (ms) the venue's longest-unusable stream has been unusable; 0 if all are live."""
        streams = self.venue(venue).streams.values()
        return max((now_ms - s.since_ms for s in streams if s.state is not USABLE), default=0)

    def worst_state(self, venue: str) -> StreamState:
        states = {stream.state for stream in self.venue(venue).streams.values()}
        return next((state for state in WORST_FIRST if state in states), StreamState.CONNECTING)

    def _set(self, venue: str, symbol: str, stream: StreamHealth, state: StreamState, now_ms: int) -> None:
        if stream.state is state:
            return
        stream.state = state
        stream.since_ms = now_ms
        for listener in self._listeners:
            listener(venue, symbol, state)
