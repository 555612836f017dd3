"""Opportunity lifecycle: open → update (on material change only) → closed, one stable id per gap."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import CexCexConfig
from bot.messages import Costs, Signal, new_id
from bot.scoring.rule import Score
from strategies.base import Evaluation, OpportunityKey


@dataclass(slots=True)
class _Open:
    opportunity_id: str
    last: Signal


def _signal(evaluation: Evaluation, score: Score, opportunity_id: str, status: str) -> Signal:
    return Signal.model_validate(
        {
            "ts": evaluation.ts,
            "opportunity_id": opportunity_id,
            "status": status,
            "kind": evaluation.kind,
            "symbol": evaluation.symbol,
            "buy_venue": evaluation.buy_venue,
            "sell_venue": evaluation.sell_venue,
            "buy_price": evaluation.buy_price,
            "sell_price": evaluation.sell_price,
            "buy_book_ts": evaluation.buy_book_ts,
            "sell_book_ts": evaluation.sell_book_ts,
            "size": evaluation.size,
            "gross_edge_bps": evaluation.gross_edge_bps,
            "net_edge_bps": evaluation.net_edge_bps,
            "costs": Costs(
                fees=evaluation.fees,
                gas=evaluation.gas,
                base_fee_gwei=evaluation.base_fee_gwei,
                priority_fee_gwei=evaluation.priority_fee_gwei,
            ),
            "score": score.score,
            "expected_lifetime_ms": score.expected_lifetime_ms,
            "expected_edge_bps": score.expected_edge_bps,
            "model": score.model,
        }
    )


class OpportunityTracker:
    """Turn evaluations into signals: open a gap, re-signal it on material change, close it."""

    def __init__(self, steps: CexCexConfig) -> None:
        self._steps = steps
        self._open: dict[OpportunityKey, _Open] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def is_open(self, key: OpportunityKey) -> bool:
        return key in self._open

    def observe(self, evaluation: Evaluation, score: Score | None) -> Signal | None:
        """The signal this evaluation calls for, if any. `score` is required when the evaluation is tradeable."""
        held = self._open.get(evaluation.key)
        if not evaluation.tradeable:
            if held is None:
                return None
            del self._open[evaluation.key]
            return _signal(evaluation, Score(0.0, 0.0, 0.0, held.last.model), held.opportunity_id, "closed")
        if score is None:
            raise ValueError("a tradeable evaluation needs a score")
        if held is None:
            opened = _signal(evaluation, score, new_id(), "open")
            self._open[evaluation.key] = _Open(opened.opportunity_id, opened)
            return opened
        if not self._material_change(held.last, evaluation, score):
            return None
        updated = _signal(evaluation, score, held.opportunity_id, "update")
        held.last = updated
        return updated

    def open_keys(self) -> list[OpportunityKey]:
        return list(self._open)

    def close(self, key: OpportunityKey, ts: int) -> Signal | None:
        """Close one open opportunity without a new evaluation (a book became unusable), repeating its last prices."""
        held = self._open.pop(key, None)
        if held is None:
            return None
        return held.last.model_copy(update={"id": new_id(), "ts": max(ts, held.last.ts), "status": "closed"})

    def close_all(self, ts: int) -> list[Signal]:
        """Close every open opportunity (on shutdown)."""
        return [signal for key in self.open_keys() if (signal := self.close(key, ts)) is not None]

    def _material_change(self, last: Signal, evaluation: Evaluation, score: Score) -> bool:
        steps = self._steps
        return (
            abs(score.score - last.score) > steps.step_score
            or abs(evaluation.net_edge_bps - last.net_edge_bps) > steps.step_edge_bps
            or abs(evaluation.size - last.size) > steps.step_size_fraction * last.size
        )
