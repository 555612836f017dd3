"""The `paper` section of the config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class PaperConfig(BaseModel):
    """Settings of the paper trader (every field has a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ledger_path: str = Field(
        default=".arbbot/paper-ledger.sqlite",
        description="SQLite ledger (WAL), created if missing; a relative path is from the current directory",
    )
    balances: dict[Name, dict[Name, Annotated[float, Field(allow_inf_nan=False)]]] = Field(
        default_factory=dict,
        description="starting balances per account and asset; an account is a CEX venue or a chain's wallet "
        "(by chain name) for pool legs; seeded once, the first time an (account, asset) appears",
    )
    default_latency_ms: NonNegativeInt = Field(default=100, description="decision ts to order at the venue")
    latency_ms: dict[Name, NonNegativeInt] = Field(default_factory=dict, description="per venue or chain name")
    cex_limit_bps: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = Field(
        default=20.0,
        description="limit beyond the worst price risk walked (else its expected price); null: market orders",
    )
    dex_tolerance_bps: Annotated[float, Field(ge=0.0, le=10_000.0)] = Field(
        default=50.0, description="a swap reverts when its average price is this much worse than expected"
    )
    gas_units_per_swap: Annotated[int, Field(ge=21_000, le=5_000_000)] = 110_000
    native_asset: Name = Field(default="ETH", description="the chain's gas asset")
    native_price_fallback: dict[Name, Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="price of the native asset per quote asset (e.g. {USDT: 3000}), used to value gas when no "
        "book or pool prices it; gas nothing prices is counted and marked unpriced in the ledger, not valued 0",
    )
    enforce_balances: bool = Field(
        default=False,
        description="a leg (or an unwind) whose account lacks what it spends (quote to buy, base to sell, the "
        "native asset for gas) misses as insufficient_balance; off by default: balances may go negative",
    )
    respect_deadline: bool = Field(default=True, description="a leg whose book comes after the window misses")
    max_book_wait_ms: Annotated[int, Field(ge=10, le=600_000)] = Field(
        default=5_000, description="wall time to wait for a book at or after the execution time; then missed"
    )
    book_history: Annotated[int, Field(ge=2, le=100_000)] = Field(
        default=512, description="recent books kept per venue and symbol to find the one at an execution time"
    )
    unwind: Literal["hold", "reverse", "complete"] = Field(
        default="reverse",
        description="a leg left alone: hold the inventory open, reverse it where it filled, or complete the "
        "missed leg at market",
    )
    unwind_after_ms: NonNegativeInt = Field(default=1_000, description="market time after the fill to unwind")
    group: Name = "paper"
    consumer: Name = "paper-1"
    start_from: Literal["new", "oldest"] = Field(
        default="new", description="where a new consumer group starts on the decision stream"
    )
    claim_idle_ms: Annotated[int, Field(ge=1_000)] = Field(
        default=60_000, description="take over other consumers' pending decisions idle this long"
    )
    read_count: Annotated[int, Field(ge=1, le=10_000)] = 64
    block_ms: Annotated[int, Field(ge=10, le=60_000)] = 1_000

    @model_validator(mode="after")
    def _sane(self) -> PaperConfig:
        if not self.ledger_path.strip():
            raise ValueError("paper.ledger_path must not be empty")
        return self

    def latency_of(self, venue: str) -> int:
        """Decision to venue latency, ms."""
        return self.latency_ms.get(venue, self.default_latency_ms)
