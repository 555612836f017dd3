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


def _finite_non_negative(value: float) -> float:
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"must be a finite number >= 0, got {value!r}")
    return value


PositiveFinite = Annotated[float, AfterValidator(_finite_positive)]
NonNegativeFinite = Annotated[float, AfterValidator(_finite_non_negative)]
Timestamp = Annotated[int, Field(gt=0, description="milliseconds since the Unix epoch")]


def _check_levels(levels: tuple[Level, ...], side: str) -> None:
    # Written for speed: it runs on every book update of every feed.
    isfinite = math.isfinite
    descending = side == "bids"
    previous = math.inf if descending else -math.inf
    for price, size in levels:
        if not (isfinite(price) and price > 0.0 and isfinite(size) and size > 0.0):
            raise ValueError(f"{side} level ({price!r}, {size!r}): price and size must be finite numbers > 0")
        if (price >= previous) if descending else (price <= previous):
            raise ValueError(f"{side} not sorted best first at price {price}")
        previous = price


def _check_book(bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
    if not bids or not asks:
        raise ValueError("book needs at least one bid and one ask")
    _check_levels(bids, "bids")
    _check_levels(asks, "asks")
    if bids[0][0] >= asks[0][0]:
        raise ValueError(f"crossed book: best bid {bids[0][0]} >= best ask {asks[0][0]}")


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
        _check_book(self.bids, self.asks)
        return self

    @classmethod
    def from_levels(
        cls,
        venue: str,
        symbol: str,
        ts: int,
        bids: tuple[Level, ...],
        asks: tuple[Level, ...],
        recv_ts: int | None = None,
    ) -> BookEvent:
        """Build a book from levels that are already tuples of floats, with the same checks as validation
        but without pydantic's per-field work (the feeds' hot path); ValueError when invalid."""
        if not venue or len(symbol) < 3:
            raise ValueError(f"bad venue or symbol: {venue!r} {symbol!r}")
        for stamp in (ts, recv_ts):
            if stamp is not None and (type(stamp) is not int or stamp <= 0):
                raise ValueError(f"timestamp must be a positive integer of ms, got {stamp!r}")
        _check_book(bids, asks)
        if cls is not BookEvent:
            return cls.model_construct(venue=venue, symbol=symbol, ts=ts, bids=bids, asks=asks, recv_ts=recv_ts)
        # What model_construct builds (fields in declaration order, the given ones marked as set), without its
        # per-field default lookups, which cost as much as the checks above.
        event = cls.__new__(cls)
        values: dict[str, object] = {"recv_ts": recv_ts, "exchange_ts": None, "market": None, "type": "book"}
        values.update(venue=venue, symbol=symbol, ts=ts, bids=bids, asks=asks)
        _set_attribute(event, "__dict__", values)
        _set_attribute(event, "__pydantic_fields_set__", set(_FROM_LEVELS_SET))
        _set_attribute(event, "__pydantic_extra__", None)
        _set_attribute(event, "__pydantic_private__", None)
        return event

    @property
    def best_bid(self) -> float:
        return self.bids[0][0]

    @property
    def best_ask(self) -> float:
        return self.asks[0][0]


_set_attribute = object.__setattr__
_FROM_LEVELS_SET = frozenset({"recv_ts", "venue", "symbol", "ts", "bids", "asks"})


class TradeEvent(_Event):
    """One public trade; `side` is the taker's side."""

    type: Literal["trade"] = "trade"
    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=3)
    ts: Timestamp
    price: PositiveFinite
    size: PositiveFinite
    side: Literal["buy", "sell"]


class GasEvent(_Event):
    """One block's gas market: base fee, the median tip, how full the block was."""

    type: Literal["gas"] = "gas"
    chain: str = Field(min_length=1)
    block: Annotated[int, Field(ge=0)]
    ts: Timestamp
    base_fee_gwei: NonNegativeFinite
    priority_fee_gwei: NonNegativeFinite
    gas_used_ratio: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class PoolEvent(_Event):
    """A constant-product pool's reserves (a Uniswap V3 pool as the virtual reserves of its current range)."""

    type: Literal["pool"] = "pool"
    chain: str = Field(min_length=1)
    dex: str = Field(min_length=1)
    pool: str = Field(min_length=1, description="pool address")
    symbol: str = Field(min_length=3)
    base: str = Field(min_length=1)
    quote: str = Field(min_length=1)
    reserve_base: PositiveFinite
    reserve_quote: PositiveFinite
    fee_bps: Annotated[float, Field(ge=0.0, lt=10_000.0, allow_inf_nan=False)]
    block: Annotated[int, Field(ge=0)]
    ts: Timestamp

    @model_validator(mode="after")
    def _symbol_names_its_tokens(self) -> PoolEvent:
        if self.symbol != f"{self.base}/{self.quote}":
            raise ValueError(f"symbol {self.symbol!r} does not match base/quote {self.base}/{self.quote}")
        return self

    @property
    def price(self) -> float:
        """Marginal price, quote per base, before fees."""
        return self.reserve_quote / self.reserve_base


MarketEvent = BookEvent | TradeEvent | GasEvent | PoolEvent
