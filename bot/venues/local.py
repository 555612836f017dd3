"""The local simulated venues: one venue server per simulated venue, driven by the market simulator."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.clock import Clock
from bot.config import RootConfig
from bot.sim.driver import SimulationDriver
from bot.sim.market import MarketSimulator
from bot.tasks import cancel_and_wait
from bot.venues.base import Instrument, VenueServer
from bot.venues.registry import server_class


class LocalVenues:
    """Start a server for every simulated venue of the config and feed it simulated books."""

    def __init__(self, config: RootConfig, clock: Clock | None = None) -> None:
        if config.simulator is None:
            raise ValueError("the config has no simulator section")
        sim = config.simulator
        names = [name for name, venue in config.venues.items() if venue.simulated]
        self.servers: dict[str, VenueServer] = {
            name: server_class(config.venues[name].exchange)(
                name,
                [
                    Instrument(s, sim.symbols[s].tick_size, sim.symbols[s].lot_size, sim.symbols[s].lot_size)
                    for s in config.symbols_of(name)
                ],
            )
            for name in names
        }
        self.simulator = MarketSimulator(sim, {name: config.symbols_of(name) for name in names})
        self.driver = SimulationDriver(self.simulator, self.servers, clock)
        self._task: asyncio.Task[None] | None = None

    async def start(self, run_market: bool = True) -> None:
        """Start the servers, publish a first book everywhere, then keep the market moving."""
        await asyncio.gather(*(server.start() for server in self.servers.values()))
        self.driver.step()
        if run_market:
            self._task = asyncio.get_running_loop().create_task(self.driver.run(), name="simulator")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await asyncio.gather(*(server.stop() for server in self.servers.values()))

    def endpoint(self, venue: str) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """(URL overrides, market rows) for ccxt to reach a simulated venue."""
        server = self.servers[venue]
        return server.ccxt_urls(), server.market_rows() if server.markets_from_rows else None
