"""The clock of a role in a backtest: the time of the newest market event that role has seen."""

from __future__ import annotations

import asyncio

from bot.events import MarketEvent
from bot.paper.market import local_ts


class MarketTimeClock:
    """Reads the local receive time of the latest market event observed; sleeps in wall time (retries only).

    A role on this clock measures no bus lag and stamps what it decides with the market's time, whatever the
    speed of the replay, so a backtest's outcome depends on the data alone.
    """

    def __init__(self) -> None:
        self._now_ms = 0

    def observe(self, event: MarketEvent) -> None:
        self._now_ms = max(self._now_ms, local_ts(event))

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._now_ms / 1_000.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
