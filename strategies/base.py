"""What every strategy sees and returns: a read-only market view in, evaluations out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from bot.events import BookEvent
from bot.feeds.health import LatencyStats, StreamState

OpportunityKey = tuple[str, str, str, str]
"""(kind, symbol, buy_venue, sell_venue)."""


class MarketView(Protocol):
    """Read-only market state: the latest valid book per venue and symbol."""

    def book(self, venue: str, symbol: str) -> BookEvent | None: ...

    def venues_for(self, symbol: str) -> Iterable[str]: ...

    def latency(self, venue: str) -> LatencyStats | None: ...

    def stream_state(self, venue: str, symbol: str) -> StreamState | None: ...


class Evaluation(NamedTuple):
    """One venue pair evaluated in one direction after a market update (a NamedTuple: built per update).

    `size` is 0 when no size pays after costs; prices are then the touch (best ask, best bid).
    `fees` (taker and pool fees) and `gas` are in quote units; the gas fields say what gas was assumed.
    """

    kind: str
    symbol: str
    buy_venue: str
    sell_venue: str
    ts: int
    buy_book_ts: int
    sell_book_ts: int
    size: float
    buy_price: float
    sell_price: float
    gross_edge_bps: float
    net_edge_bps: float
    fees: float
    tradeable: bool
    gas: float = 0.0
    """Gas of the on-chain legs, quote units (0 for CEX-only kinds)."""
    base_fee_gwei: float | None = None
    priority_fee_gwei: float | None = None

    @property
    def key(self) -> OpportunityKey:
        return (self.kind, self.symbol, self.buy_venue, self.sell_venue)


class Strategy(Protocol):
    """Re-evaluate only the opportunities an update touches."""

    kind: str

    def on_book(self, market: MarketView, book: BookEvent) -> list[Evaluation]: ...
