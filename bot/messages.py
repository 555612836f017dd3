"""Messages that cross Redis (DESIGN.md, "Redis channels")."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bot.events import BookEvent, GasEvent, NonNegativeFinite, PoolEvent, PositiveFinite, Timestamp

SIGNAL_SCHEMA_VERSION: Final = 1
DECISION_SCHEMA_VERSION: Final = 1
FILL_SCHEMA_VERSION: Final = 1
CONTROL_SCHEMA_VERSION: Final = 1
HEARTBEAT_SCHEMA_VERSION: Final = 1
MARKET_SCHEMA_VERSION: Final = 1


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be finite, got {value!r}")
    return value


Finite = Annotated[float, AfterValidator(_finite)]


def new_id() -> str:
    """Return a fresh message id (UUID4, hex)."""
    return uuid.uuid4().hex


class Costs(BaseModel):
    """Costs assumed by a signal, in quote units (gas fields are for on-chain legs)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    fees: NonNegativeFinite
    gas: NonNegativeFinite = 0.0
    base_fee_gwei: NonNegativeFinite | None = None
    priority_fee_gwei: NonNegativeFinite | None = None


class Signal(BaseModel):
    """A scored arbitrage opportunity; `closed` ends the opportunity named by `opportunity_id`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["signal"] = "signal"
    schema_version: Literal[1] = SIGNAL_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    ts: Timestamp
    opportunity_id: str = Field(min_length=1)
    status: Literal["open", "update", "closed"]
    kind: Literal["cex_cex", "cex_dex", "dex_dex"]
    symbol: str = Field(min_length=3)
    buy_venue: str = Field(min_length=1)
    sell_venue: str = Field(min_length=1)
    buy_price: PositiveFinite
    sell_price: PositiveFinite
    buy_book_ts: Timestamp
    sell_book_ts: Timestamp
    size: NonNegativeFinite
    gross_edge_bps: Finite
    net_edge_bps: Finite
    costs: Costs
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    expected_lifetime_ms: NonNegativeFinite
    expected_edge_bps: Finite
    model: str = Field(min_length=1)
    sig: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Signal:
        if self.buy_venue == self.sell_venue and self.kind == "cex_cex":
            raise ValueError("cex_cex signal must name two different venues")
        if self.size == 0.0 and self.status != "closed":
            raise ValueError("an open or updated signal needs size > 0")
        return self


class Window(BaseModel):
    """When a decision may be executed: not before `not_before_ts`, not after `deadline_ts` (ms since epoch)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    not_before_ts: Timestamp
    deadline_ts: Timestamp


class SlippageBps(BaseModel):
    """Expected slippage of each leg, in bps of its best price (never negative)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    buy: NonNegativeFinite
    sell: NonNegativeFinite


class GasPlan(BaseModel):
    """The fee caps of an on-chain leg (EIP-1559): max fee = base fee × headroom + tip."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    max_fee_gwei: NonNegativeFinite
    priority_fee_gwei: NonNegativeFinite
    target_block: Annotated[int, Field(ge=0)] | None = None


RiskState = Literal["ACTIVE", "REDUCING", "HALTED"]


class Decision(BaseModel):
    """The risk service's answer to one signal: execute it (size, window, gas) or skip it, with reasons.

    Optional extras (`symbol`, `kind`, venues, expected average prices) tell a trader what to trade without
    looking the signal up; the DESIGN.md fields are required.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["decision"] = "decision"
    schema_version: Literal[1] = DECISION_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    ts: Timestamp
    signal_id: str = Field(min_length=1)
    opportunity_id: str = Field(min_length=1)
    action: Literal["execute", "skip"]
    reasons: tuple[str, ...]
    size: NonNegativeFinite
    slippage_bps: SlippageBps
    expected_pnl: Finite
    window: Window
    gas: GasPlan | None
    risk_state: RiskState
    symbol: str | None = Field(default=None, min_length=3)
    kind: Literal["cex_cex", "cex_dex", "dex_dex"] | None = None
    buy_venue: str | None = Field(default=None, min_length=1)
    sell_venue: str | None = Field(default=None, min_length=1)
    buy_price: PositiveFinite | None = Field(default=None, description="expected average buy price at `size`")
    sell_price: PositiveFinite | None = Field(default=None, description="expected average sell price at `size`")
    buy_limit_price: PositiveFinite | None = Field(default=None, description="worst buy price walked, on the tick")
    sell_limit_price: PositiveFinite | None = Field(default=None, description="worst sell price walked, on the tick")
    sig: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        if self.action == "execute" and self.size <= 0.0:
            raise ValueError("an execute decision needs size > 0")
        return self


class FillLeg(BaseModel):
    """One executed leg: `price` is the average price, `fee` is in quote units."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    venue: str = Field(min_length=1)
    side: Literal["buy", "sell"]
    price: PositiveFinite
    size: NonNegativeFinite
    fee: NonNegativeFinite


class Fill(BaseModel):
    """What the (paper) trader did with a decision."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["fill"] = "fill"
    schema_version: Literal[1] = FILL_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    ts: Timestamp
    decision_id: str = Field(min_length=1)
    legs: tuple[FillLeg, ...]
    realised_pnl: Finite
    status: Literal["filled", "partial", "missed", "reverted"]
    symbol: str | None = Field(default=None, min_length=3)
    kind: Literal["cex_cex", "cex_dex", "dex_dex"] | None = None
    opportunity_id: str | None = Field(default=None, min_length=1)
    sig: str | None = None


class Control(BaseModel):
    """A command to a role (`arbbot risk halt|resume`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["control"] = "control"
    schema_version: Literal[1] = CONTROL_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    ts: Timestamp
    role: str = Field(min_length=1)
    command: Literal["halt", "resume"]
    reason: str
    sig: str | None = None


class Heartbeat(BaseModel):
    """A role's sign of life on `arb:heartbeat:{role}`: who it is, since when, and its counters.

    A watcher can call the role gone once no heartbeat came for a few `interval_s`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["heartbeat"] = "heartbeat"
    schema_version: Literal[1] = HEARTBEAT_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    ts: Timestamp
    role: str = Field(min_length=1)
    pid: Annotated[int, Field(ge=0)]
    host: str | None = None
    started_ts: Timestamp
    interval_s: PositiveFinite
    version: str = Field(min_length=1)
    counters: dict[str, int | Finite] = Field(default_factory=dict)
    sig: str | None = None


class BookMessage(BookEvent):
    """A `book` event as a message on `arb:book:{venue}:{symbol}` (a BookEvent, so MarketState takes it)."""

    schema_version: Literal[1] = MARKET_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    sig: str | None = None

    @classmethod
    def of(cls, event: BookEvent) -> BookMessage:
        """Wrap an already validated event without validating it again (the signals hot path)."""
        return cls.model_construct(**dict(event), schema_version=MARKET_SCHEMA_VERSION, id=new_id())


class GasMessage(GasEvent):
    """A `gas` event as a message on `arb:gas:{chain}`."""

    schema_version: Literal[1] = MARKET_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    sig: str | None = None

    @classmethod
    def of(cls, event: GasEvent) -> GasMessage:
        """Wrap an already validated event without validating it again."""
        return cls.model_construct(**dict(event), schema_version=MARKET_SCHEMA_VERSION, id=new_id())


class PoolMessage(PoolEvent):
    """A `pool` event as a message on `arb:pool:{chain}:{pool}`."""

    schema_version: Literal[1] = MARKET_SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1)
    sig: str | None = None

    @classmethod
    def of(cls, event: PoolEvent) -> PoolMessage:
        """Wrap an already validated event without validating it again."""
        return cls.model_construct(**dict(event), schema_version=MARKET_SCHEMA_VERSION, id=new_id())


MarketMessage = BookMessage | GasMessage | PoolMessage
"""The market events as messages (pub/sub only, no stream)."""

Message = Signal | Decision | Fill | Control | Heartbeat | BookMessage | GasMessage | PoolMessage
"""Every message type the codec knows."""
