"""Every Redis channel and stream name. No other module spells one out."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "arb"

_STREAM_OF_CHANNEL_FAMILY = {"signal": "signal", "decision": "decision", "fill": "fill"}


@dataclass(frozen=True, slots=True)
class Channels:
    """Channel and stream names under one configurable prefix."""

    prefix: str = DEFAULT_PREFIX

    def signal(self, kind: str, symbol: str) -> str:
        return f"{self.prefix}:signal:{kind}:{symbol}"

    def signal_pattern(self) -> str:
        return f"{self.prefix}:signal:*"

    def signal_stream(self) -> str:
        return f"{self.prefix}:stream:signal"

    def stream_for_pattern(self, pattern: str) -> str | None:
        """The catch-up stream holding the messages of a channel pattern (`arb:signal:*` → `arb:stream:signal`)."""
        head = f"{self.prefix}:"
        if not pattern.startswith(head):
            return None
        family = pattern[len(head) :].split(":", 1)[0]
        stream = _STREAM_OF_CHANNEL_FAMILY.get(family)
        return f"{self.prefix}:stream:{stream}" if stream else None
