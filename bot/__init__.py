"""arbbot: event-driven crypto arbitrage signals on Redis.

What subscribers and integrators import; everything else is internal and may change.
"""

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_event, decode_message, encode
from bot.config import ConfigError, RootConfig, load_config
from bot.events import BookEvent, TradeEvent
from bot.messages import Costs, Signal

__all__ = [
    "BookEvent",
    "Channels",
    "ConfigError",
    "Costs",
    "DecodeError",
    "RootConfig",
    "Signal",
    "TradeEvent",
    "decode_event",
    "decode_message",
    "encode",
    "load_config",
]
