"""Which local venue server speaks which ccxt exchange's protocol."""

from __future__ import annotations

import importlib

from bot.venues.base import VenueServer

_SERVERS = {
    "okx": ("bot.venues.okx", "OkxVenueServer"),
    "bybit": ("bot.venues.bybit", "BybitVenueServer"),
    "binance": ("bot.venues.binance", "BinanceVenueServer"),
}

PROTOCOLS = tuple(_SERVERS)


def server_class(protocol: str) -> type[VenueServer]:
    """The venue server class for a ccxt exchange id; ValueError for a protocol we do not serve."""
    try:
        module_name, class_name = _SERVERS[protocol]
    except KeyError:
        raise ValueError(f"no local venue server speaks {protocol!r} (have: {', '.join(PROTOCOLS)})") from None
    cls: type[VenueServer] = getattr(importlib.import_module(module_name), class_name)
    return cls
