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

    def decision(self, symbol: str) -> str:
        return f"{self.prefix}:decision:{symbol}"

    def decision_pattern(self) -> str:
        return f"{self.prefix}:decision:*"

    def decision_stream(self) -> str:
        return f"{self.prefix}:stream:decision"

    def fill(self, symbol: str) -> str:
        return f"{self.prefix}:fill:{symbol}"

    def fill_pattern(self) -> str:
        return f"{self.prefix}:fill:*"

    def fill_stream(self) -> str:
        return f"{self.prefix}:stream:fill"

    def book(self, venue: str, symbol: str) -> str:
        return f"{self.prefix}:book:{venue}:{symbol}"

    def book_pattern(self) -> str:
        return f"{self.prefix}:book:*"

    def gas(self, chain: str) -> str:
        return f"{self.prefix}:gas:{chain}"

    def gas_pattern(self) -> str:
        return f"{self.prefix}:gas:*"

    def pool(self, chain: str, pool: str) -> str:
        return f"{self.prefix}:pool:{chain}:{pool}"

    def pool_pattern(self) -> str:
        return f"{self.prefix}:pool:*"

    def control(self, role: str) -> str:
        return f"{self.prefix}:control:{role}"

    def heartbeat(self, role: str) -> str:
        return f"{self.prefix}:heartbeat:{role}"

    def heartbeat_pattern(self) -> str:
        return f"{self.prefix}:heartbeat:*"

    def key(self, *parts: str) -> str:
        """A plain Redis key under the prefix (e.g. a role's saved state), never a channel."""
        return ":".join((self.prefix, "state", *parts))

    def family(self, pattern: str) -> str | None:
        """The channel family of a pattern or channel under this prefix (`arb:decision:*` → `decision`)."""
        head = f"{self.prefix}:"
        if not pattern.startswith(head):
            return None
        return pattern[len(head) :].split(":", 1)[0] or None

    def stream_for_pattern(self, pattern: str) -> str | None:
        """The catch-up stream holding the messages of a channel pattern (`arb:signal:*` → `arb:stream:signal`)."""
        family = self.family(pattern)
        if family is None:
            return None
        stream = _STREAM_OF_CHANNEL_FAMILY.get(family)
        return f"{self.prefix}:stream:{stream}" if stream else None
