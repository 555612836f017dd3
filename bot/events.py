"""Typed market events: what feeds emit and recordings hold (DESIGN.md, "Events")."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Level = tuple[float, float]
"""One book level: (price, size)."""


def _finite_positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"must be a finite number > 0, got {value!r}")
    return value


PositiveFinite = Annotated[float, AfterValidator(_finite_positive)]
Timestamp = Annotated[int, Field(gt=0, description="milliseconds since the Unix epoch")]


def _check_levels(levels: tuple[Level, ...], side: str) -> None:
    previous: float | None = None
    for price, size in levels:
        _finite_positive(price)
        _finite_positive(size)
        if previous is not None:
            in_order = price < previous if side == "bids" else price > previous
            if not in_order:
                raise ValueError(f"{side} not sorted best first at price {price}")
        previous = price


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=True)

    recv_ts: Timestamp | None = None
    exchange_ts: Timestamp | None = None
    market: str | None = None


class BookEvent(_Event):
    """Top-N order book of one venue and symbol; bids and asks best first."""

    type: Literal["book"] = "book"
    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=3)
    ts: Timestamp
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    @model_validator(mode="after")
    def _valid_book(self) -> BookEvent:
        if not self.bids or not self.asks:
            raise ValueError("book needs at least one bid and one ask")
        _check_levels(self.bids, "bids")
        _check_levels(self.asks, "asks")
        if self.bids[0][0] >= self.asks[0][0]:
            raise ValueError(f"crossed book: best bid {self.bids[0][0]} >= best ask {self.asks[0][0]}")
        return self

    @property
    def best_bid(self) -> float:
        return self.bids[0][0]

    @property
    def best_ask(self) -> float:
        return self.asks[0][0]


class TradeEvent(_Event):
    """One public trade; `side` is the taker's side."""

    type: Literal["trade"] = "trade"
    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=3)
    ts: Timestamp
    price: PositiveFinite
    size: PositiveFinite
    side: Literal["buy", "sell"]


MarketEvent = BookEvent | TradeEvent
