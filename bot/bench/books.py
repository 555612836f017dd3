"""Book updates for the live benchmarks: one update per call into local venue servers, a known share of them
crossing another venue's book so that they trigger signals."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.events import Level
from bot.venues.base import Instrument, VenueServer

PROTOCOL_CYCLE = ("okx", "bybit", "binance")
"""Venue i speaks PROTOCOL_CYCLE[i % 3]."""
TAKER_FEES_BPS = (2.0, 2.5, 3.0)
HALF_SPREAD_BPS = 1.5
LEVEL_GAP_BPS = 0.5
STEP_BPS = 0.3  # the symbol's mid moves by about this much per update of it
REQUOTED_LEVELS = 5  # levels per side quoted afresh on each update
START_PRICE = 1_000.0


@dataclass(frozen=True, slots=True)
class MarketShape:
    """How many books, how deep, and how often the crossing venue of each symbol crosses.

    Venue `j % venues` is the crossing venue of symbol j: on one of its updates in `cross_period` its book moves
    up by `cross_bps`, so that its bids cross the other venues' asks (net of fees) and the update opens signals;
    its next update moves it back and closes them.
    """

    venues: int
    symbols: int
    levels: int = 20
    cross_period: int = 10
    """At 3 venues: 1 update in 15 crosses or uncrosses (6.7 %), and each opens or closes 2 signals."""
    cross_bps: float = 20.0

    @property
    def triggering_share(self) -> float:
        """The share of updates that cross or uncross: each triggers signals."""
        return 2.0 / self.cross_period / self.venues

    def venue_names(self) -> list[str]:
        return [f"v{i:02d}" for i in range(self.venues)]

    def protocols(self) -> list[str]:
        return [PROTOCOL_CYCLE[i % len(PROTOCOL_CYCLE)] for i in range(self.venues)]

    def instruments(self) -> list[Instrument]:
        return [FixedDecimals(f"S{j:02d}/USDT", 0.01, 0.0001, 0.0001) for j in range(self.symbols)]


@dataclass(frozen=True, slots=True)
class FixedDecimals(Instrument):
    """An instrument of tick 0.01 and lot 0.0001 whose texts skip `decimal_places` (the same texts, faster).

    The venue server formats every level of every update; this keeps the simulated exchange's own CPU time, which
    a real exchange spends on other machines, from crowding arbbot on a small host.
    """

    def price_text(self, price: float) -> str:
        return f"{price:.2f}"

    def size_text(self, size: float) -> str:
        return f"{size:.4f}"


class BookDriver:
    """Quote the books in turn, one update per call, symbols interleaved.

    A book's top REQUOTED_LEVELS levels per side are quoted afresh around its centre on each update; deeper levels
    sit on a fixed price grid of the symbol (a 0.5 bps step), with sizes set by their price, so they change only as
    the top moves past them: about 20 level changes per frame, like real venues.

    `ts` rises strictly per symbol across its venues (near the wall clock in ms), so (symbol, ts) names one
    update; while recording, `stamps[(symbol, ts)]` is `time.time_ns()` when its frame left the venue server: when
    the connection's writer had written it to the socket (with several subscribed connections, the last one).
    """

    def __init__(self, shape: MarketShape, servers: Sequence[VenueServer], seed: int = 7) -> None:
        if len(servers) != shape.venues:
            raise ValueError(f"{shape.venues} venues but {len(servers)} servers")
        if shape.levels <= REQUOTED_LEVELS:
            raise ValueError(f"books need more than {REQUOTED_LEVELS} levels")
        self.shape = shape
        self._servers = list(servers)
        self._symbols = [inst.symbol for inst in shape.instruments()]
        self._rng = random.Random(seed)
        self._mids = [START_PRICE + 37.0 * j for j in range(shape.symbols)]
        self._grid = [round(mid * LEVEL_GAP_BPS * 1e-4, 2) for mid in self._mids]  # a whole number of ticks
        self._offsets = [(HALF_SPREAD_BPS + k * LEVEL_GAP_BPS) * 1e-4 for k in range(REQUOTED_LEVELS)]
        self._deep_sizes = [self._rng.uniform(0.2, 3.0) for _ in range(97)]
        self._last_ts = [0] * shape.symbols
        self._visits = [[0] * shape.symbols for _ in range(shape.venues)]
        self._calls = 0
        self.recording = False
        self.stamps: dict[tuple[str, int], int] = {}
        self.recorded_updates = 0
        self.triggering: set[tuple[str, int]] = set()
        """The (symbol, ts) of the recorded updates that crossed or uncrossed."""

    def publish_all(self) -> None:
        """Give every book a first, uncrossed state (what a subscriber's snapshot shows)."""
        for i in range(self.shape.venues):
            for j in range(self.shape.symbols):
                self._publish(i, j, crossed=False)

    def __call__(self) -> None:
        """Publish the next update."""
        shape = self.shape
        j = self._calls % shape.symbols
        i = (self._calls // shape.symbols) % shape.venues
        self._calls += 1
        self._visits[i][j] += 1
        phase = self._visits[i][j] % shape.cross_period if i == j % shape.venues else -1
        self._mids[j] *= 1.0 + self._rng.gauss(0.0, STEP_BPS * 1e-4)
        ts = self._publish(i, j, crossed=phase == 0, stamp=self.recording)
        if self.recording:
            key = (self._symbols[j], ts)
            self.recorded_updates += 1
            if phase in (0, 1):
                self.triggering.add(key)

    def _publish(self, i: int, j: int, crossed: bool, stamp: bool = False) -> int:
        center = self._mids[j] * (1.0 + self.shape.cross_bps * 1e-4) if crossed else self._mids[j]
        sizes = [self._rng.uniform(0.2, 3.0) for _ in range(REQUOTED_LEVELS)]
        bids = self._side(j, center, sizes, -1)
        asks = self._side(j, center, sizes, 1)
        ts = max(time.time_ns() // 1_000_000, self._last_ts[j] + 1)
        self._last_ts[j] = ts
        on_sent = self._stamper((self._symbols[j], ts)) if stamp else None
        self._servers[i].publish_book(self._symbols[j], ts, bids, asks, on_sent)
        return ts

    def _stamper(self, key: tuple[str, int]) -> Callable[[], None]:
        stamps = self.stamps

        def sent() -> None:
            stamps[key] = time.time_ns()

        return sent

    def _side(self, j: int, center: float, sizes: Sequence[float], sign: int) -> tuple[Level, ...]:
        """Bids (sign -1) or asks (+1), best first: the quoted top, then the grid beyond it."""
        top = [(center * (1.0 + sign * offset), size) for offset, size in zip(self._offsets, sizes, strict=True)]
        grid = self._grid[j]
        edge = top[-1][0] / grid
        first = math.ceil(edge) - 1 if sign < 0 else math.floor(edge) + 1  # strictly beyond the quoted top
        table = self._deep_sizes
        steps = (first + sign * n for n in range(self.shape.levels - REQUOTED_LEVELS))
        return tuple(top + [(step * grid, table[step % len(table)]) for step in steps])
