"""The `paper` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PaperConfig(BaseModel):
    """Settings of the paper trader (every field has a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
