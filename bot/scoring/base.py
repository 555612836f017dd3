"""What the engine asks of a scorer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bot.scoring.rule import Score
from strategies.base import Evaluation


class Scorer(Protocol):
    """Scores tradeable evaluations, a batch at a time (one market update's worth)."""

    def score_batch(self, evaluations: Sequence[Evaluation]) -> list[Score]:
        """Return one score per evaluation, in order."""
        ...
