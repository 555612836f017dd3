"""The `risk` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RiskConfig(BaseModel):
    """Settings of the risk/timing service (every field has a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
