"""Counted rejections: bad input is counted and logged at a bounded rate, never raised."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)


class RejectionCounter:
    """Count rejected inputs by (source, reason) and log the first of each at most once per interval."""

    def __init__(self, log_interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._last_logged: dict[tuple[str, str], float] = {}
        self._log_interval_s = log_interval_s
        self._clock = clock

    def reject(self, source: str, reason: str, detail: str = "") -> None:
        """Record one rejected input from `source` for `reason`."""
        key = (source, reason)
        self._counts[key] += 1
        now = self._clock()
        last = self._last_logged.get(key)
        if last is None or now - last >= self._log_interval_s:
            self._last_logged[key] = now
            log.warning("rejected input from %s (%s): %s [%d so far]", source, reason, detail, self._counts[key])

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def by_reason(self) -> dict[str, int]:
        """Totals per reason, summed over sources."""
        totals: Counter[str] = Counter()
        for (_, reason), count in self._counts.items():
            totals[reason] += count
        return dict(totals)

    def count(self, source: str, reason: str) -> int:
        return self._counts[(source, reason)]
