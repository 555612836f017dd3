"""Messages that cross Redis (DESIGN.md, "Redis channels"). Later issues add Decision, Fill, Control."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bot.events import NonNegativeFinite, PositiveFinite, Timestamp

SIGNAL_SCHEMA_VERSION: Final = 1


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


Message = Signal
"""Every message type the codec knows; a union once Decision, Fill and Control land."""
