"""The live benchmarks' market: local venue servers for a MarketShape, and the signals role's config to reach them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.bench.books import TAKER_FEES_BPS, MarketShape
from bot.config import RootConfig
from bot.venues.base import VenueServer
from bot.venues.registry import server_class

MODEL_AGE_H = 1e6  # a shipped model is older than the default 24 h: only flagged, it scores either way


def signals_config(shape: MarketShape, redis_url: str, prefix: str, model_dir: Path | None) -> dict[str, Any]:
    """The signals role's config for the bench market, JSON-ready (checked here, so a mistake fails in the parent).

    Defaults everywhere else, as `arbbot run` would have them: 20-level books, market data republished on the book
    channels, the rule scorer, or the model scorer with `model_dir`. Trades are not watched: the market has none.
    """
    venues = {
        name: {"exchange": protocol, "taker_fee_bps": TAKER_FEES_BPS[i % len(TAKER_FEES_BPS)], "trades": False}
        for i, (name, protocol) in enumerate(zip(shape.venue_names(), shape.protocols(), strict=True))
    }
    config: dict[str, Any] = {
        "redis": {"url": redis_url, "prefix": prefix},
        "symbols": [inst.symbol for inst in shape.instruments()],
        "book_depth": shape.levels,
        "venues": venues,
        "roles": ["signals"],
    }
    if model_dir is not None:
        config["scorer"] = {"model_dir": str(model_dir), "max_model_age_h": MODEL_AGE_H}
    RootConfig.model_validate(config)
    return config


class VenueSet:
    """One local venue server per venue of the shape, each listing every symbol."""

    def __init__(self, shape: MarketShape) -> None:
        instruments = shape.instruments()
        self.servers: list[VenueServer] = [
            server_class(protocol)(name, instruments)
            for name, protocol in zip(shape.venue_names(), shape.protocols(), strict=True)
        ]

    async def start(self) -> None:
        await asyncio.gather(*(server.start() for server in self.servers))

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers))

    def endpoints(self) -> dict[str, Any]:
        """For the signals role: venue name → (ccxt URL overrides, market rows or None), JSON-ready."""
        return {
            server.name: [server.ccxt_urls(), server.market_rows() if server.markets_from_rows else None]
            for server in self.servers
        }
