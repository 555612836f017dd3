"""The rule scorer: the documented fallback used until (and wherever) no trained model fits.

Rules, for an opportunity with net edge `e` bps whose two books are `skew` ms apart:

- score = sigmoid((e - edge_midpoint_bps) / edge_scale_bps) * exp(-skew / skew_tau_ms):
  a wider net edge is likelier to survive until we act; books seen at different moments are less trustworthy.
- expected_lifetime_ms = base_lifetime_ms * score.
- expected_edge_bps = e * score: the edge we expect to capture, discounted by the chance it is gone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import RuleScorerConfig
from strategies.base import Evaluation


@dataclass(frozen=True, slots=True)
class Score:
    """What a scorer says about one opportunity."""

    score: float
    expected_lifetime_ms: float
    expected_edge_bps: float
    model: str


class RuleScorer:
    """Score an opportunity from its net edge and the age gap between its two books."""

    name = "rule"

    def __init__(self, config: RuleScorerConfig) -> None:
        self._config = config

    def score(self, evaluation: Evaluation) -> Score:
        """Apply the module's rules to one evaluation."""
        cfg = self._config
        z = (evaluation.net_edge_bps - cfg.edge_midpoint_bps) / cfg.edge_scale_bps
        edge_term = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        skew_ms = abs(evaluation.buy_book_ts - evaluation.sell_book_ts)
        probability = edge_term * math.exp(-skew_ms / cfg.skew_tau_ms)
        return Score(
            score=probability,
            expected_lifetime_ms=cfg.base_lifetime_ms * probability,
            expected_edge_bps=evaluation.net_edge_bps * probability,
            model=self.name,
        )

    def score_batch(self, evaluations: Sequence[Evaluation]) -> list[Score]:
        """Score each evaluation on its own (the rules need no history)."""
        return [self.score(evaluation) for evaluation in evaluations]
