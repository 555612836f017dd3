"""Fire server-side faults at local venues on a schedule (`arbbot demo --faults drop,stall,…`)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from bot.clock import Clock, SystemClock
from bot.venues.base import Fault, VenueServer


def parse_faults(text: str) -> list[Fault]:
    """Parse `drop,stall,…`; ValueError naming the unknown kind and the known ones."""
    kinds = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        try:
            kinds.append(Fault(name))
        except ValueError:
            known = ", ".join(fault.value for fault in Fault)
            raise ValueError(f"unknown fault {name!r} (known: {known})") from None
    if not kinds:
        raise ValueError("no fault kinds given")
    return kinds


class FaultSchedule:
    """Every `interval_s`, fire the next fault kind (round robin) at a randomly chosen venue."""

    def __init__(
        self,
        servers: Mapping[str, VenueServer],
        kinds: Sequence[Fault],
        interval_s: float = 5.0,
        seed: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self._servers = servers
        self._kinds = list(kinds)
        self._interval_s = interval_s
        self._rng = random.Random(seed)
        self._clock = clock or SystemClock()
        self.fired = 0

    async def run(self) -> None:
        names = sorted(self._servers)
        while True:
            await self._clock.sleep(self._interval_s)
            kind = self._kinds[self.fired % len(self._kinds)]
            server = self._servers[self._rng.choice(names)]
            server.inject(kind)
            if kind is Fault.SNAPSHOT_FAIL:
                server.inject(Fault.DROP)  # a snapshot is only requested again after a resubscription
            self.fired += 1
