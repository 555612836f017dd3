"""The `risk` section of the config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, model_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,100}$")]
Money = Annotated[float, Field(allow_inf_nan=False)]


class VenueRules(BaseModel):
    """Trading rules and timing of one venue (a CEX by name, a pool as `dex:address` or by its DEX name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lot_size: PositiveFloat = Field(default=1e-6, description="sizes are whole multiples of this (base units)")
    tick_size: PositiveFloat = Field(default=0.01, description="limit prices are whole multiples of this (quote)")
    min_notional: NonNegativeFloat = Field(default=5.0, description="smallest order, in quote")
    feed_lag_ms: NonNegativeFloat | None = Field(
        default=None, description="market event to our screen; None: measured from the books, else 100 ms"
    )
    order_rtt_ms: NonNegativeFloat = Field(default=60.0, description="order round trip (send to acknowledgement)")


class RiskConfig(BaseModel):
    """Settings of the risk/timing service (every field has a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_venue: VenueRules = VenueRules()
    venues: dict[Name, VenueRules] = Field(default_factory=dict, description="per venue; others use default_venue")
    default_feed_lag_ms: NonNegativeFloat = Field(default=100.0, description="feed lag until enough books measured")
    block_time_ms: PositiveFloat = Field(
        default=12_000.0,
        description="time between blocks of the chain; an on-chain leg's window opens no earlier than the target "
        "block's expected time (latest block's receive time + blocks_ahead × this)",
    )
    blocks_ahead: Annotated[int, Field(ge=1, le=100)] = Field(default=1, description="target block = latest + this")
    gas_headroom: Annotated[float, Field(ge=1.0, le=10.0)] = Field(
        default=2.0, description="max fee = base fee × headroom + tip (a base fee can rise 12.5% a block)"
    )
    tip_multiplier: Annotated[float, Field(ge=0.0, le=100.0)] = Field(
        default=1.0, description="tip = the chain's median tip × this"
    )
    min_window_ms: NonNegativeFloat = Field(default=0.0, description="skip (`expired`) windows shorter than this")
    max_notional_per_trade: PositiveFloat = Field(default=10_000.0, description="quote, per trade (buy leg)")
    max_open_exposure: PositiveFloat = Field(default=50_000.0, description="quote, executed but not yet filled")
    exposure_timeout_ms: Annotated[int, Field(ge=0)] = Field(
        default=10_000, description="an executed decision without a fill counts as open until deadline + this"
    )
    max_trades_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 30
    daily_loss_limit: PositiveFloat = Field(default=500.0, description="quote; realised loss since 00:00 UTC → HALTED")
    reduce_at_loss_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.5, description="realised loss ≥ this × daily_loss_limit → REDUCING"
    )
    reducing_size_factor: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.5,
        description="size cap multiplier while REDUCING; with target_inventory, REDUCING also skips a trade that "
        "moves any targeted balance away from its target (`reducing: increases inventory`) and sizes the others "
        "no further than the target",
    )
    min_expected_pnl: Money = Field(default=0.0, description="quote; execute only above this")
    size_candidates: Annotated[int, Field(ge=2, le=1_000)] = Field(
        default=48, description="sizes tried between one lot and the cap when maximising expected PnL"
    )
    starting_balances: dict[Name, dict[Name, Money]] = Field(
        default_factory=dict,
        description="per account (CEX venue, or chain for pool legs) and asset, before any fill; "
        "an account not named here has no balance limit; a trade needing more than an account holds is sized "
        "down, or skipped as `insufficient_balance`",
    )
    balances_from: Literal["fills", "config"] = Field(
        default="fills",
        description="`fills`: starting balances plus every fill in the capped fill stream, replayed at start (on a "
        "shared Redis that includes earlier runs' fills); `config`: starting balances plus only the fills seen "
        "since this start (a restart forgets earlier fills). Today's realised PnL is replayed either way",
    )
    target_inventory: dict[Name, dict[Name, Money]] = Field(
        default_factory=dict, description="per account and asset; trades moving away from it pay inventory_cost_bps"
    )
    inventory_cost_bps: NonNegativeFloat = Field(
        default=5.0, description="what moving one unit of notional back to target would cost (transfer, fees)"
    )
    signal_pattern: str = Field(default="*", description="only signals whose channel matches (fnmatch), e.g. *BTC*")
    start_from: Literal["last", "new"] = Field(
        default="last", description="on start: catch up after the last signal processed, or only new ones"
    )
    read_block_ms: Annotated[int, Field(ge=10, le=60_000)] = 1_000

    @model_validator(mode="after")
    def _sane(self) -> RiskConfig:
        if not self.signal_pattern:
            raise ValueError("risk.signal_pattern must not be empty (use '*')")
        return self

    def rules(self, venue: str) -> VenueRules:
        """The venue's rules (a pool `dex:address` falls back to its DEX name, then to the defaults)."""
        rules = self.venues.get(venue)
        if rules is None and ":" in venue:
            rules = self.venues.get(venue.split(":", 1)[0])
        return rules or self.default_venue
